# streamapp worker image: `streamapp worker` by default; compose also runs
# `streamapp db upgrade` and `streamapp topics create` from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# README* is optional: copied only if present, in case pyproject.toml names it.
COPY pyproject.toml constraints.txt README* ./
COPY streamapp/ streamapp/
COPY agents/ agents/
COPY schemas/ schemas/
COPY templates/ templates/

RUN pip install --no-cache-dir -c constraints.txt .

RUN useradd --create-home --uid 10001 --user-group streamapp \
    && mkdir -p /var/lib/streamapp \
    && chown streamapp:streamapp /var/lib/streamapp

USER streamapp

ENV STREAMAPP_DATA_DIR=/var/lib/streamapp

EXPOSE 6066

CMD ["streamapp", "worker"]

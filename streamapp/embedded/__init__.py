"""Embedded services for development, tests and the demo: Apache Kafka and PostgreSQL.

Both run as child processes of the command that starts them, on 127.0.0.1 and free
ports, in throwaway folders. None of them can outlive that command: each child asks
the kernel for a signal when its parent dies (``PR_SET_PDEATHSIG``), so even a
SIGKILLed test run leaves no broker or database behind.
"""

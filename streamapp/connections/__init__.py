"""A shop's provider accounts (Twilio, Stripe): validation, verification, sealing at rest."""

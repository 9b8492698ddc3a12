"""A local Stripe emulator for development, tests and the demo (never live mode).

It speaks Stripe's wire format to the official ``stripe`` SDK: form-encoded
requests, JSON objects and error bodies shaped like Stripe's, idempotency
keys, a hosted checkout page paid with Stripe's test cards, and signed
webhook deliveries with retries. Faults can be injected for tests.
"""

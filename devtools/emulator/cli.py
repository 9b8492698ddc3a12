"""``smi-stripe-emulator``: run the Stripe emulator on loopback.

    smi-stripe-emulator --port 12111 --webhook-url http://127.0.0.1:8000/webhooks/stripe \\
                        --webhook-secret whsec_demo
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence

import uvicorn

from devtools.emulator.app import EmulatorSettings, create_emulator_app
from devtools.emulator.webhooks import Faults


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smi-stripe-emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--public-url", help="address browsers use (default http://HOST:PORT)")
    parser.add_argument("--webhook-url", help="where to deliver events (none: no deliveries)")
    parser.add_argument("--webhook-secret", default="whsec_emulator")
    faults = parser.add_argument_group("fault injection")
    faults.add_argument("--error-rate", type=float, default=0.0, help="share of API calls -> 500")
    faults.add_argument(
        "--rate-limit-rate", type=float, default=0.0, help="share of API calls -> 429"
    )
    faults.add_argument("--latency-ms", type=float, default=0.0, help="added to each API call")
    faults.add_argument(
        "--webhook-copies", type=int, default=1, help="deliver each event this many times at once"
    )
    faults.add_argument(
        "--reorder-webhooks", action="store_true", help="deliver events in batches, newest first"
    )
    faults.add_argument("--seed", type=int, help="seed for the fault dice")
    args = parser.parse_args(argv)
    settings = EmulatorSettings(
        public_url=args.public_url or f"http://{args.host}:{args.port}",
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        faults=Faults(
            error_rate=args.error_rate,
            rate_limit_rate=args.rate_limit_rate,
            latency_s=args.latency_ms / 1000,
            webhook_copies=args.webhook_copies,
            reorder_webhooks=args.reorder_webhooks,
            rng=random.Random(args.seed),
        ),
    )
    uvicorn.run(create_emulator_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0

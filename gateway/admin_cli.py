"""``smi-admin``: the admin API from a terminal.

    smi-admin jobs [--status failed] [--search buyer@example.com]
    smi-admin show JOB_ID                 the job, its audit trail, refunds and outbox
    smi-admin retry JOB_ID
    smi-admin fulfil JOB_ID               a job awaiting payment: ask Stripe, fulfil if paid
    smi-admin refund JOB_ID --reason "customer complaint"
    smi-admin report [--format csv|json] [--since 2026-11-01] [--until 2026-11-30]
    smi-admin reconcile                   exits 1 when Stripe and our records disagree
    smi-admin events [--job JOB_ID] [--outcome ignored] [--type refund.failed]
    smi-admin replay EVENT_ID             apply a received Stripe event again (idempotent)
    smi-admin erase --email ADDRESS       a customer's images and personal data; says what is kept
    smi-admin users [list]                the dashboard's accounts
    smi-admin users add EMAIL [--role owner|support]   prints its one-time password
    smi-admin users reset EMAIL           a new one-time password; its sessions end
    smi-admin users remove EMAIL

The gateway's address comes from ``--url`` or ``SMI_ADMIN_URL``, the token
from ``SMI_ADMIN_TOKEN``. ``--json`` prints the API's answer as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from gateway.currencies import format_money
from shared import settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smi-admin", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=settings.read("ADMIN_URL"))
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    commands = parser.add_subparsers(dest="command", required=True)
    jobs = commands.add_parser("jobs", help="list and search jobs")
    jobs.add_argument("--status")
    jobs.add_argument("--search", help="part of a job id, email, session, intent or image URL")
    jobs.add_argument("--limit", type=int, default=50)
    commands.add_parser("show", help="one job with its audit trail").add_argument("job_id")
    commands.add_parser("retry", help="publish a failed job again").add_argument("job_id")
    commands.add_parser(
        "fulfil", help="ask Stripe about a job awaiting payment; fulfil it if paid"
    ).add_argument("job_id")
    refund = commands.add_parser("refund", help="refund a job by hand")
    refund.add_argument("job_id")
    refund.add_argument("--reason", required=True)
    report = commands.add_parser("report", help="revenue and refunds by day")
    report.add_argument("--format", choices=["csv", "json"], default="csv")
    report.add_argument("--since")
    report.add_argument("--until")
    commands.add_parser("reconcile", help="Stripe's records against ours")
    events = commands.add_parser("events", help="received Stripe events and what each did")
    events.add_argument("--job")
    events.add_argument("--outcome", help="applied, no change, ignored, unknown job, error")
    events.add_argument("--type")
    events.add_argument("--limit", type=int, default=50)
    commands.add_parser(
        "replay", help="apply a received Stripe event again (changes nothing it did before)"
    ).add_argument("event_id")
    erase = commands.add_parser(
        "erase", help="remove a customer's images and personal data; says what is kept"
    )
    erase.add_argument("--email", required=True)
    users = commands.add_parser("users", help="the dashboard's accounts: list, add, reset, remove")
    users.add_argument("action", nargs="?", choices=["list", "add", "reset", "remove"])
    users.add_argument("email", nargs="?")
    users.add_argument("--role", choices=["owner", "support"], default="support")
    args = parser.parse_args(argv)
    if args.command == "users" and args.action in ("add", "reset", "remove") and not args.email:
        parser.error(f"users {args.action} needs the account's email address")

    token = settings.read("ADMIN_TOKEN")
    if not token:
        print("smi-admin: set SMI_ADMIN_TOKEN to the gateway's admin token", file=sys.stderr)
        return 2
    client = httpx.Client(
        base_url=args.url.rstrip("/"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    try:
        return _run(client, args)
    except httpx.HTTPError as exc:
        print(f"smi-admin: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    except _ApiError as exc:
        print(f"smi-admin: {exc}", file=sys.stderr)
        return 2


class _ApiError(Exception):
    pass


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    response = client.request(method, path, **kwargs)
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise _ApiError(f"{response.status_code}: {message}")
    return response


def _run(client: httpx.Client, args: argparse.Namespace) -> int:
    if args.command == "users":
        return _users(client, args)
    if args.command == "report":
        params = {"format": args.format, "since": args.since or "", "until": args.until or ""}
        response = _call(client, "GET", "/admin/reports/revenue", params=params)
        print(response.text if args.format == "csv" else json.dumps(response.json(), indent=2))
        return 0
    if args.command == "jobs":
        params = {"status": args.status or "", "q": args.search or "", "limit": args.limit}
        body = _call(client, "GET", "/admin/jobs", params=params).json()
        _print(args, body, _jobs_table)
        return 0
    if args.command == "show":
        body = _call(client, "GET", f"/admin/jobs/{args.job_id}").json()
        _print(args, body, _job_details)
        return 0
    if args.command in ("retry", "fulfil"):
        body = _call(client, "POST", f"/admin/jobs/{args.job_id}/{args.command}").json()
        _print(args, body, lambda b: f"{b['job']['job_id']}: {b['job']['status']}")
        return 0
    if args.command == "refund":
        body = _call(
            client, "POST", f"/admin/jobs/{args.job_id}/refund", json={"reason": args.reason}
        ).json()
        _print(args, body, lambda b: f"{b['job']['job_id']}: {b['job']['status']}")
        return 0
    if args.command == "events":
        params = {
            "job": args.job or "",
            "outcome": args.outcome or "",
            "type": args.type or "",
            "limit": args.limit,
        }
        body = _call(client, "GET", "/admin/events", params=params).json()
        _print(args, body, _events_table)
        return 0
    if args.command == "replay":
        body = _call(client, "POST", f"/admin/events/{args.event_id}/replay").json()
        _print(args, body, lambda b: f"{args.event_id}: {b['outcome']}")
        return 1 if body["outcome"] == "error" else 0
    if args.command == "erase":
        body = _call(client, "POST", "/admin/erase", json={"email": args.email}).json()
        _print(args, body, _erasure)
        return 1 if body["in_progress"] else 0
    body = _call(client, "GET", "/admin/reconciliation").json()
    _print(args, body, _reconciliation)
    return 1 if body["mismatches"] else 0


def _users(client: httpx.Client, args: argparse.Namespace) -> int:
    if args.action in (None, "list"):
        body = _call(client, "GET", "/admin/users").json()
        _print(args, body, _users_table)
        return 0
    path = f"/admin/users/{quote(args.email, safe='@')}"
    if args.action == "add":
        body = _call(client, "POST", "/admin/users", json={"email": args.email, "role": args.role})
    elif args.action == "reset":
        body = _call(client, "POST", f"{path}/reset")
    else:
        answer = _call(client, "DELETE", path).json()
        _print(args, answer, lambda b: f"removed {b['removed']}; its sessions are ended")
        return 0
    _print(args, body.json(), _one_time)
    return 0


def _users_table(body: dict[str, Any]) -> str:
    lines = [f"{'account':<40} {'role':<8} {'sessions':>8}  {'last sign-in':<20}"]
    for user in body["users"]:
        note = "  (one-time password)" if user["password_is_temporary"] else ""
        lines.append(
            f"{user['email']:<40} {user['role']:<8} {user['sessions']:>8}  "
            f"{(user['last_sign_in_at'] or '-')[:19]:<20}{note}"
        )
    return "\n".join(lines)


def _one_time(body: dict[str, Any]) -> str:
    user = body["user"]
    return (
        f"{user['email']} ({user['role']}): one-time password {body['password']}\n"
        "It works once: the first sign-in at /dashboard/ chooses the account's own."
    )


def _print(args: argparse.Namespace, body: Any, render: Any) -> None:
    print(json.dumps(body, indent=2) if args.json else render(body))


def _jobs_table(body: dict[str, Any]) -> str:
    lines = [f"{'job':<30} {'status':<17} {'amount':>9} {'margin':>9} {'created':<20} email"]
    for job in body["jobs"]:
        amount = format_money(job["amount_cents"], job["currency"])
        margin = job.get("margin_cents")
        shown = format_money(margin, job["currency"]) if margin is not None else "-"
        lines.append(
            f"{job['job_id']:<30} {job['status']:<17} {amount:>9} {shown:>9} "
            f"{(job['created_at'] or '')[:19]:<20} {job['customer_email'] or ''}"
        )
    return "\n".join(lines)


def _job_details(body: dict[str, Any]) -> str:
    job = body["job"]
    lines = [f"{key}: {value}" for key, value in job.items()]
    lines.append("audit:")
    for entry in body["audit"]:
        lines.append(
            f"  {entry['at'][:19]}  {entry['from'] or '-':>16} -> {entry['to']:<16} "
            f"{entry['reason']} [{entry['source']}]"
        )
    payment = body.get("payment")
    if payment:
        lines.append(
            f"paid {format_money(payment['amount_cents'], payment['currency'])} "
            f"(tax {format_money(payment['tax_cents'], payment['currency'])}, "
            f"discount {format_money(payment['discount_cents'], payment['currency'])})"
        )
    for dispute in body.get("disputes", []):
        lines.append(
            f"dispute {dispute['id']}: {dispute['status']} ({dispute['reason']}) "
            f"{format_money(dispute['amount_cents'], dispute['currency'])}"
        )
    for refund in body["refunds"]:
        lines.append(
            f"refund {refund['idempotency_key']}: {refund['status']} "
            f"{refund['stripe_refund_id'] or ''} after {refund['attempts']} tries "
            f"{refund['last_error'] or ''}"
        )
    return "\n".join(lines)


def _events_table(body: dict[str, Any]) -> str:
    lines = [f"{'event':<30} {'type':<32} {'outcome':<12} {'received':<20} job / detail"]
    for event in body["events"]:
        detail = event["job_id"] or ""
        if event["detail"]:
            detail = f"{detail} {event['detail']}".strip()
        if event["deliveries"] > 1:
            detail += f" ({event['deliveries']} deliveries)"
        lines.append(
            f"{event['event_id']:<30} {event['type']:<32} {event['outcome']:<12} "
            f"{(event['received_at'] or '')[:19]:<20} {detail}"
        )
    return "\n".join(lines)


def _reconciliation(body: dict[str, Any]) -> str:
    checked = ", ".join(f"{count} {name}" for name, count in body["checked"].items())
    lines = [f"checked {checked}"]
    if not body["mismatches"]:
        lines.append("no mismatches")
    for m in body["mismatches"]:
        lines.append(
            f"{m['kind']:<28} {m['stripe_id'] or '-':<36} job {m['job_id'] or '-'}: {m['detail']}"
        )
    return "\n".join(lines)


def _erasure(body: dict[str, Any]) -> str:
    lines = [f"erased {len(body['erased'])} jobs of {body['email']}: images, email, addresses"]
    lines += [f"  {job_id}" for job_id in body["erased"]]
    if body["in_progress"]:
        lines.append("not erased, still in progress (erase again once they are finished):")
        lines += [f"  {job_id}" for job_id in body["in_progress"]]
    lines.append(f"kept for the financial record: {body['kept']}")
    return "\n".join(lines)

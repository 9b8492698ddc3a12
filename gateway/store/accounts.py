"""Who may enter the seller's dashboard: accounts, their passwords, sessions and lockouts.

    account, password = add_account(session, "ann@shop.example", SellerRole.OWNER)
    checked = sign_in(session, "ann@shop.example", password, "203.0.113.9", rules)
    token = open_session(session, checked, rules, "203.0.113.9", "Firefox")  # for the cookie
    seen = find_session(session, token, rules)           # None once ended, idle or expired
    end_session(session, token)

Passwords are hashed with argon2id (argon2-cffi's RFC 9106 profile: 64 MiB,
3 passes), never stored or logged. ``add_account`` and ``reset_password``
make a one-time password, shown once to whoever asked: it opens one session
(within ``ONE_TIME_FOR``) and is spent, and that session can do nothing but choose the account's own
password (``password_is_temporary``). A session's
cookie holds 256 random bits; the table keeps only their SHA-256, so a copy
of the database opens no session.

Failed sign-ins are counted per account (whether or not it exists, so the
answer tells nothing) and per client address, in the database, so every
gateway process of the fleet counts together; past either limit the key is
locked and every sign-in on it is refused, right password or not, until
the lock ends. A successful sign-in clears its account's count, never the
address's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.store.tables import (
    SellerAccount,
    SellerRole,
    SellerSession,
    SignInFailure,
    as_utc,
    utcnow,
)

HASHER = PasswordHasher()  # argon2id, RFC 9106's low-memory profile
# Verified when the address has no account, so a sign-in takes as long either way.
_NOBODY = HASHER.hash(secrets.token_urlsafe(16))
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
SEEN_EVERY = timedelta(seconds=60)  # a session's last request is written at most this often
ONE_TIME_FOR = timedelta(days=7)  # a one-time password not used by then opens nothing

# What each role may do; the dashboard and its tests read this table, nothing else.
PERMISSIONS: dict[str, frozenset[str]] = {
    SellerRole.OWNER: frozenset(
        {
            "view",
            "retry",
            "fulfil",
            "resend",
            "refund",
            "refund_any_amount",
            "erase",
            "replay",
            "reconcile",
            "reports",
            "settings",
            "accounts",
        }
    ),
    SellerRole.SUPPORT: frozenset({"view", "retry", "fulfil", "resend", "refund"}),
}


@dataclass(frozen=True)
class SessionRules:
    """How long a session lasts, and how many failed sign-ins lock an account or address
    (the gateway's ``SMI_DASHBOARD_*`` and ``SMI_SIGN_IN_*`` settings)."""

    lifetime: timedelta = timedelta(hours=12)  # from sign-in, whatever happens
    idle: timedelta = timedelta(minutes=30)  # without a request
    max_failures: int = 5  # per account, within ``lockout``
    max_failures_per_address: int = 20
    lockout: timedelta = timedelta(minutes=15)  # the window failures are counted in; the lock


class AccountError(ValueError):
    """Raised when an account cannot be added or changed as asked: an address, role or
    password that is not allowed (the message says which)."""


class UnknownAccountError(AccountError):
    """Raised when no account has the address given."""


class AccountConflictError(AccountError):
    """Raised when the address already has an account, or the last owner would go."""


class SignInRefused(Exception):
    """Raised when a sign-in does not go through: a wrong address or password (the same
    answer for both), or ``retry_after_s`` > 0 while the account or address is locked."""

    def __init__(self, retry_after_s: int = 0) -> None:
        super().__init__("locked" if retry_after_s else "wrong address or password")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Seller:
    """The signed-in person, as every page and action sees them."""

    account_id: int
    email: str
    role: str
    password_is_temporary: bool

    @property
    def who(self) -> str:
        """How the audit trail names them."""
        return f"seller:{self.email}"

    def may(self, action: str) -> bool:
        return action in PERMISSIONS.get(self.role, frozenset())


def normal_email(email: str) -> str:
    return email.strip().lower()


def check_new_password(password: str, email: str) -> None:
    """``AccountError`` unless ``password`` is one an account may choose."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise AccountError(
            f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    if password.strip().lower() == normal_email(email):
        raise AccountError("a password may not be the account's address")


def one_time_password() -> str:
    """A password to be typed once: 20 characters, about 100 bits, no look-alikes."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(20))
    return "-".join(raw[i : i + 5] for i in range(0, 20, 5))


def add_account(session: Session, email: str, role: str) -> tuple[SellerAccount, str]:
    """A new account with a one-time password (returned, never stored); ``AccountError`` if
    the address is taken or not an address, or the role is unknown."""
    address = normal_email(email)
    if not 3 <= len(address) <= 320 or "@" not in address or not address.isprintable():
        raise AccountError("an account is an email address")
    if role not in PERMISSIONS:
        raise AccountError(f"a role is one of {', '.join(PERMISSIONS)}, not {role!r}")
    if account_of(session, address) is not None:
        raise AccountConflictError(f"{address} already has an account")
    password = one_time_password()
    account = SellerAccount(
        email=address,
        role=role,
        password_hash=HASHER.hash(password),
        password_is_temporary=True,
        created_at=utcnow(),
        password_changed_at=utcnow(),
    )
    session.add(account)
    try:
        session.flush()
    except IntegrityError as exc:  # added by someone else at the same moment
        raise AccountConflictError(f"{address} already has an account") from exc
    return account, password


def account_of(session: Session, email: str) -> SellerAccount | None:
    return session.scalar(select(SellerAccount).where(SellerAccount.email == normal_email(email)))


def list_accounts(session: Session) -> list[dict[str, Any]]:
    """Every account with its open sessions, owners first."""
    now = utcnow()
    open_sessions = dict(
        session.execute(
            select(SellerSession.account_id, func.count())
            .where(SellerSession.ended_at.is_(None), SellerSession.expires_at > now)
            .group_by(SellerSession.account_id)
        ).all()
    )
    accounts = session.scalars(select(SellerAccount).order_by(SellerAccount.role, SellerAccount.id))
    return [
        {
            "id": a.id,
            "email": a.email,
            "role": a.role,
            "password_is_temporary": a.password_is_temporary,
            "created_at": a.created_at,
            "last_sign_in_at": a.last_sign_in_at,
            "sessions": open_sessions.get(a.id, 0),
        }
        for a in accounts
    ]


def _existing(session: Session, email: str) -> SellerAccount:
    account = account_of(session, email)
    if account is None:
        raise UnknownAccountError(f"no account {normal_email(email)}")
    return account


def reset_password(session: Session, email: str) -> str:
    """A new one-time password for the account (returned); every session of it ends and its
    lock goes."""
    account = _existing(session, email)
    password = one_time_password()
    account.password_hash = HASHER.hash(password)
    account.password_is_temporary = True
    account.password_changed_at = utcnow()
    end_sessions(session, account.id)
    session.execute(delete(SignInFailure).where(SignInFailure.key == _account_key(account.email)))
    return password


def remove_account(session: Session, email: str) -> None:
    """Delete the account and its sessions; the last owner cannot go."""
    account = _existing(session, email)
    if account.role == SellerRole.OWNER:
        owners = session.scalar(select(func.count()).where(SellerAccount.role == SellerRole.OWNER))
        if (owners or 0) <= 1:
            raise AccountConflictError("the last owner cannot be removed")
    session.execute(delete(SellerSession).where(SellerSession.account_id == account.id))
    session.delete(account)


def change_password(session: Session, account_id: int, current: str, new: str) -> None:
    """The account's own password instead of the one it has; ``AccountError`` if ``current``
    is wrong (it is not asked after a one-time password, which was spent signing in) or
    ``new`` is not allowed (nor the same)."""
    account = session.get_one(SellerAccount, account_id, with_for_update=True)
    if not account.password_is_temporary and not _verified(account.password_hash, current):
        raise AccountError("the current password is not right")
    check_new_password(new, account.email)
    if new == current:
        raise AccountError("the new password must differ from the current one")
    account.password_hash = HASHER.hash(new)
    account.password_is_temporary = False
    account.password_changed_at = utcnow()


def sign_in(
    session: Session, email: str, password: str, address: str, rules: SessionRules
) -> Seller:
    """The account if ``password`` is its own and neither it nor ``address`` is locked;
    else ``SignInRefused``, its failure counted: catch it inside the transaction, so the
    count is committed."""
    now = utcnow()
    keys = (_account_key(email), f"address:{address}")
    _forget_old_failures(session, now, rules.lockout)
    locked_until = [_locked_until(session, key, now) for key in keys]
    if any(locked_until):
        wait = max(until for until in locked_until if until) - now
        raise SignInRefused(max(int(wait.total_seconds()) + 1, 1))
    account = account_of(session, email)
    if account is None or len(password) > MAX_PASSWORD_LENGTH:
        _verified(_NOBODY, password[:MAX_PASSWORD_LENGTH])
        _count_failure(session, keys, rules, now)
        raise SignInRefused()
    stale = account.password_is_temporary and (
        as_utc(account.password_changed_at) + ONE_TIME_FOR <= now
    )
    if not _verified(account.password_hash, password) or stale:
        _count_failure(session, keys, rules, now)
        raise SignInRefused()
    if account.password_is_temporary:  # spent: this session must choose the account's own
        account.password_hash = HASHER.hash(secrets.token_urlsafe(32))
    elif HASHER.check_needs_rehash(account.password_hash):
        account.password_hash = HASHER.hash(password)
    session.execute(delete(SignInFailure).where(SignInFailure.key == keys[0]))
    account.last_sign_in_at = now
    return _seller(account)


def open_session(
    session: Session, seller: Seller, rules: SessionRules, address: str, user_agent: str
) -> str:
    """A new session of ``seller``; returns the token for the cookie (kept nowhere else)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        SellerSession(
            id=token_hash(token),
            account_id=seller.account_id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + rules.lifetime,
            address=address[:64],
            user_agent=user_agent[:255],
        )
    )
    # Sessions long over are not kept.
    session.execute(
        delete(SellerSession).where(
            SellerSession.account_id == seller.account_id,
            SellerSession.expires_at < now - timedelta(days=1),
        )
    )
    return token


def find_session(session: Session, token: str, rules: SessionRules) -> Seller | None:
    """The seller whose live session ``token`` opens (its last request noted), or ``None``:
    no such session, ended, past its lifetime or idle too long. Commit afterwards."""
    if not token or len(token) > 128:
        return None
    now = utcnow()
    row = session.execute(
        select(SellerSession, SellerAccount)
        .join(SellerAccount, SellerAccount.id == SellerSession.account_id)
        .where(SellerSession.id == token_hash(token))
    ).first()
    if row is None:
        return None
    seen, account = row
    if (
        seen.ended_at is not None
        or as_utc(seen.expires_at) <= now
        or as_utc(seen.last_seen_at) + rules.idle <= now
    ):
        return None
    if as_utc(seen.last_seen_at) + SEEN_EVERY <= now:
        seen.last_seen_at = now
    return _seller(account)


def end_session(session: Session, token: str) -> None:
    session.execute(
        update(SellerSession)
        .where(SellerSession.id == token_hash(token), SellerSession.ended_at.is_(None))
        .values(ended_at=utcnow())
    )


def end_sessions(session: Session, account_id: int, keep: str | None = None) -> int:
    """End every open session of the account, but ``keep`` (a token); returns how many."""
    where = [SellerSession.account_id == account_id, SellerSession.ended_at.is_(None)]
    if keep:
        where.append(SellerSession.id != token_hash(keep))
    ended = session.execute(update(SellerSession).where(*where).values(ended_at=utcnow()))
    return int(getattr(ended, "rowcount", 0) or 0)


def sessions_of(session: Session, account_id: int) -> list[SellerSession]:
    """The account's open sessions, newest first."""
    return list(
        session.scalars(
            select(SellerSession)
            .where(
                SellerSession.account_id == account_id,
                SellerSession.ended_at.is_(None),
                SellerSession.expires_at > utcnow(),
            )
            .order_by(SellerSession.created_at.desc())
        )
    )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(token: str) -> str:
    """The form token of the session whose cookie holds ``token``: derived from it, so only
    a page of this session knows it."""
    return hmac.new(token.encode(), b"smi-dashboard-csrf", hashlib.sha256).hexdigest()


def _seller(account: SellerAccount) -> Seller:
    return Seller(account.id, account.email, account.role, account.password_is_temporary)


def _verified(hashed: str, password: str) -> bool:
    try:
        return HASHER.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def _account_key(email: str) -> str:
    return f"account:{normal_email(email)[:320]}"


def _locked_until(session: Session, key: str, now: datetime) -> datetime | None:
    until = session.scalar(select(SignInFailure.locked_until).where(SignInFailure.key == key))
    return as_utc(until) if until is not None and as_utc(until) > now else None


def _count_failure(
    session: Session, keys: tuple[str, str], rules: SessionRules, now: datetime
) -> None:
    """One more failure on the account's key and the address's; one that reaches its limit
    is locked for ``rules.lockout``."""
    limits = (rules.max_failures, rules.max_failures_per_address)
    for key, limit in zip(keys, limits, strict=True):
        row = session.get(SignInFailure, key, with_for_update=True)
        if row is None:
            try:
                with session.begin_nested():
                    row = SignInFailure(key=key, failures=0, first_at=now)
                    session.add(row)
            except IntegrityError:  # another process counted its first failure meanwhile
                row = session.get_one(SignInFailure, key, with_for_update=True)
        row.failures += 1
        if row.failures >= limit:
            row.locked_until = now + rules.lockout


def _forget_old_failures(session: Session, now: datetime, window: timedelta) -> None:
    """Counts whose window is over, and whose lock (if any) has ended, start again."""
    session.execute(
        delete(SignInFailure).where(
            SignInFailure.first_at < now - window,
            SignInFailure.locked_until.is_(None) | (SignInFailure.locked_until < now),
        )
    )

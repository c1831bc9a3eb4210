"""Server configuration: bearer tokens and the freshness policies, from flags or environment."""

from __future__ import annotations

import json
import os

from pydantic import Field

from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.domain.values import KeyShape, Model

READ_TOKENS_ENV = "SESSIONLEDGER_READ_TOKENS"
ADMIN_TOKENS_ENV = "SESSIONLEDGER_ADMIN_TOKENS"
POLICY_ENV = "SESSIONLEDGER_POLICY"


class PolicyBook(Model):
    """The default freshness policy, overridden per channel or per kind of key.

    Like a gateway's `resetByChannel` / `resetByType`: a channel rule wins over a
    kind rule, which wins over the default.
    """

    default: FreshnessPolicy = FreshnessPolicy()
    by_channel: dict[str, FreshnessPolicy] = Field(default_factory=dict)
    by_kind: dict[str, FreshnessPolicy] = Field(default_factory=dict)

    def for_key(self, session_key: str) -> FreshnessPolicy:
        shape = KeyShape.parse(session_key)
        if shape.channel and shape.channel in self.by_channel:
            return self.by_channel[shape.channel]
        if shape.kind and shape.kind in self.by_kind:
            return self.by_kind[shape.kind]
        return self.default


class ServerSettings(Model):
    read_tokens: frozenset[str] = frozenset()
    admin_tokens: frozenset[str] = frozenset()
    policies: PolicyBook = PolicyBook()

    @property
    def auth_enabled(self) -> bool:
        return bool(self.read_tokens or self.admin_tokens)

    @classmethod
    def from_environment(
        cls,
        read_tokens: str | None = None,
        admin_tokens: str | None = None,
        policy: str | None = None,
    ) -> ServerSettings:
        """Tokens are comma-separated; the policy book is JSON (camelCase keys)."""
        book = policy if policy is not None else os.environ.get(POLICY_ENV)
        return cls(
            read_tokens=_tokens(read_tokens, READ_TOKENS_ENV),
            admin_tokens=_tokens(admin_tokens, ADMIN_TOKENS_ENV),
            policies=PolicyBook.model_validate(json.loads(book)) if book else PolicyBook(),
        )


def _tokens(given: str | None, env: str) -> frozenset[str]:
    raw = given if given is not None else os.environ.get(env, "")
    return frozenset(t.strip() for t in raw.split(",") if t.strip())

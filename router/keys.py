"""Every Redis key Switchboard uses, under one configurable prefix.

Layout (prefix ``sb:`` by default):

==============================  ========  ==========================================================
key                             type      content
==============================  ========  ==========================================================
inbox                           stream    envelopes (field ``env``: JSON), consumer group ``routers``
dead                            stream    dead letters: ``reason``, ``entry``, ``payload``, ``at``
failures                        hash      inbox entry id -> last processing error (until dead-lettered)
dedup:{channel}:{account}:{pid} string    inbox entry id of that platform message (TTL)
seq:conv                        string    last conversation number
ck:{channel}:{account}:{key}    string    conversation id for a conversation key
conv:{id}                       hash      the conversation's state
hist:{id}                       stream    the conversation's history (inbound, outbound, changes), capped
closed                          zset      closed conversation id -> closed at (ms): the retention index
retention:lock                  string    one retention sweep per interval across workers (TTL)
retention:backfill              string    SCAN cursor indexing conversations closed before ``closed``; "done"
queue:{group}                   zset      unassigned open conversations, score priority*1e13+due_ms
waiting:{group}                 zset      same members, score waiting-since ms (oldest wait)
agent:{name}                    set       conversations assigned to the agent
events:{group}                  stream    live events for the group's consoles (capped)
outbox:{channel}                stream    replies in flight (``item``), group ``senders``; deleted once recorded
delivery:{conv}                 hash      reply id -> delivery status
labels                          stream    agents' corrections (transfer, priority change): the routed message
                                          as its history stores it, the group and priority it has now;
                                          capped ~100,000 (router/labels.py)
stats                           hash      counters (in:, dup:, refused:, routed:{channel}, dead, ...)
health:{kind}:{name}            string    JSON health record with a TTL (worker, adapter, supervisor)
lease:{name}                    hash      a fenced lease (router/leases.py): owner, fence, until (ms);
                                          PX TTL. Names: ``adapter:{channel}:{account}``
fence:{name}                    string    the last fence number handed out for lease {name} (no TTL)
members:{group}                 zset      live members of a group -> heartbeat expiry (ms), PX TTL
                                          (router/membership.py)
cursor:{channel}:{account}      hash      an adapter's durable positions (update offset, UIDs ...)
{channel}:…                     any       a channel's private data: its ``ChannelContext.store``
                                          (router/channel.py), e.g. ``sandbox:{user}`` (stream:
                                          replies delivered to a sandbox user), ``email:mid:
                                          {account}:{msgid}`` (e-mail thread index, TTL)
rules:active                    string    published rule-set version number
rules:v:{n}                     hash      a published rule set: source, author, at, version hash
rules:log                       stream    publish / rollback log
model:seq                       string    last published triage model version number
model:v:{n}                     hash      a published model: digest, author, at, comment, files (names
                                          and sizes, JSON), meta (its triage.json)
model:files:{n}                 hash      its files: name -> bytes (a few MB)
model:live                      string    the live version (routes); none: the configured model
model:shadow                    string    the shadow version (asked beside the live one, never routes)
model:lives                     list      versions made live, newest first (rollback pops)
model:log                       stream    publish / live / shadow / rollback log
model:observed                  stream    the shadow's and live model's answers beside each routed
                                          message (router/modelstore.py), capped ~20,000
req:{id}                        string    a write's result under its request id (TTL 1 day), see
                                          router/requests.py
users                           set       web console user names
user:{name}                     hash      a console user: role, groups (JSON), argon2 hash, token digest
session:{digest}                string    a console session (JSON: user, csrf token), TTL; keyed digest
token:{digest}                  string    user name of an API token (keyed digest of the token)
ratelimit:{kind}:{who}          string    failed-login counter with the window as TTL
canned                          hash      canned responses: title -> text
web:secret                      string    generated session secret when none is configured
samples                         stream    the dashboard's time series (field ``s``: JSON sample), capped
samples:lock                    string    one sampler per interval across console processes (TTL)
==============================  ========  ==========================================================

How long each key is kept (retention): docs/operations.md, "Retention".

The Lua scripts derive keys from the prefix too (see router/lua/common.lua); they assume one Redis
(or a managed primary), not a Cluster — see docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass

ROUTER_GROUP = "routers"
SENDER_GROUP = "senders"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "sb:"

    @property
    def inbox(self) -> str:
        return self.prefix + "inbox"

    @property
    def dead(self) -> str:
        return self.prefix + "dead"

    @property
    def failures(self) -> str:
        return self.prefix + "failures"

    @property
    def stats(self) -> str:
        return self.prefix + "stats"

    @property
    def conv_seq(self) -> str:
        return self.prefix + "seq:conv"

    def conv_key(self, channel: str, account: str, key: str) -> str:
        return f"{self.prefix}ck:{channel}:{account}:{key}"

    def conv(self, conv_id: str) -> str:
        return f"{self.prefix}conv:{conv_id}"

    def history(self, conv_id: str) -> str:
        return f"{self.prefix}hist:{conv_id}"

    @property
    def closed(self) -> str:
        return self.prefix + "closed"

    @property
    def retention_lock(self) -> str:
        return self.prefix + "retention:lock"

    @property
    def retention_backfill(self) -> str:
        return self.prefix + "retention:backfill"

    def queue(self, group: str) -> str:
        return f"{self.prefix}queue:{group}"

    def waiting(self, group: str) -> str:
        return f"{self.prefix}waiting:{group}"

    def agent(self, name: str) -> str:
        return f"{self.prefix}agent:{name}"

    def events(self, group: str) -> str:
        return f"{self.prefix}events:{group}"

    def outbox(self, channel: str) -> str:
        return f"{self.prefix}outbox:{channel}"

    def delivery(self, conv_id: str) -> str:
        return f"{self.prefix}delivery:{conv_id}"

    @property
    def labels(self) -> str:
        return self.prefix + "labels"

    def health(self, kind: str, name: str) -> str:
        return f"{self.prefix}health:{kind}:{name}"

    def cursor(self, channel: str, account: str) -> str:
        return f"{self.prefix}cursor:{channel}:{account}"

    # -- leases and membership (router/leases.py, router/membership.py) -------------------------
    def lease(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    def members(self, group: str) -> str:
        return f"{self.prefix}members:{group}"

    def health_pattern(self) -> str:
        return f"{self.prefix}health:*"

    @property
    def rules_active(self) -> str:
        return self.prefix + "rules:active"

    def rules_version(self, n: int) -> str:
        return f"{self.prefix}rules:v:{n}"

    @property
    def rules_log(self) -> str:
        return self.prefix + "rules:log"

    @property
    def rules_seq(self) -> str:
        return self.prefix + "rules:seq"

    # -- published triage models (router/modelstore.py) ------------------------------------------
    @property
    def model_seq(self) -> str:
        return self.prefix + "model:seq"

    def model_version(self, n: int) -> str:
        return f"{self.prefix}model:v:{n}"

    def model_files(self, n: int) -> str:
        return f"{self.prefix}model:files:{n}"

    @property
    def model_live(self) -> str:
        return self.prefix + "model:live"

    @property
    def model_shadow(self) -> str:
        return self.prefix + "model:shadow"

    @property
    def model_lives(self) -> str:
        return self.prefix + "model:lives"

    @property
    def model_log(self) -> str:
        return self.prefix + "model:log"

    @property
    def model_observed(self) -> str:
        return self.prefix + "model:observed"

    def request(self, request_id: str) -> str:
        return f"{self.prefix}req:{request_id}"

    # -- web console (router/console) ---------------------------------------------------------
    @property
    def users(self) -> str:
        return self.prefix + "users"

    def user(self, name: str) -> str:
        return f"{self.prefix}user:{name}"

    def session(self, digest: str) -> str:
        return f"{self.prefix}session:{digest}"

    def token(self, digest: str) -> str:
        return f"{self.prefix}token:{digest}"

    def ratelimit(self, kind: str, who: str) -> str:
        return f"{self.prefix}ratelimit:{kind}:{who}"

    @property
    def audit(self) -> str:
        return self.prefix + "audit"

    @property
    def canned(self) -> str:
        return self.prefix + "canned"

    @property
    def web_secret(self) -> str:
        return self.prefix + "web:secret"

    @property
    def samples(self) -> str:
        return self.prefix + "samples"

    @property
    def samples_lock(self) -> str:
        return self.prefix + "samples:lock"

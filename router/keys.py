"""Every Redis key Switchboard uses, under one configurable prefix and its shard prefixes.

Layout (prefix ``sb:`` by default). ``where``: ``home``, under the configured prefix; ``shard``,
under the prefix of a virtual shard (``Shards``, below; ``redis.shards``): the keys a route or
conversation script touches for one message or conversation, all in its shard's slot. With one
shard (the default) shard 0's prefix is the home prefix: the layout of a deployment before shards.

==============================  =====  ========  ==========================================================
key                             where  type      content
==============================  =====  ========  ==========================================================
inbox                           shard  stream    envelopes (field ``env``: JSON), consumer group ``routers``
lane                            shard  stream    the P1 lane: envelopes the ingest precheck suspects of a P1 situation
                                                 (and the conversation's later ones while one waits there), read by
                                                 its own group ``routers`` first; routed entries kept up to
                                                 ``inbox.lane_maxlen`` (docs/surge.md)
lane:failures                   shard  hash      like ``failures``, for lane entries (ids are unique per stream only)
lane:since                      shard  string    ms since which appends write ``tail:`` markers (the lane on); an append
                                                 with the lane off deletes it
lane:waiting                    shard  string    the lane's entries not acknowledged yet (append.lua up, route.lua and
                                                 dead.lua down)
tail:{channel}:{account}:{key}  shard  string    the stream (``i`` inbox, ``l`` lane) and entry id of the conversation's
                                                 last append, while the lane is on (TTL ``inbox.lane_order_ttl_s``)
dead                            shard  stream    dead letters: ``reason``, ``entry``, ``payload``, ``at``
failures                        shard  hash      inbox entry id -> last processing error (until dead-lettered)
dedup:{channel}:{account}:{pid} shard  string    inbox entry id of that platform message (TTL)
unreadable:{source}:{pid}      shard  string    an unreadable input kept as a dead letter (TTL; shard 0 only)
seq:conv                        shard  string    last conversation number
ck:{channel}:{account}:{key}    shard  string    conversation id for a conversation key
conv:{id}                       shard  hash      the conversation's state
hist:{id}                       shard  stream    the conversation's history (inbound, outbound, changes), capped
closed                          shard  zset      closed conversation id -> closed at (ms): the retention index
retention:lock                  shard  string    one retention sweep per interval across workers (TTL)
retention:backfill              shard  string    SCAN cursor indexing conversations closed before ``closed``; "done"
archived:{store}                shard  hash      closed conversation id -> digest of what archive store {store} holds of
                                                 it (router/archive.py; lua/common.lua conv_digest): retention deletes
                                                 it only while that is the digest of what Redis holds, in every store
archive:cursor:{store}          shard  string    that store's archiver's position in ``closed``: "closed-ms conv-id"
archive:again:{store}           shard  zset      closed conversations retention found due but not in that store as they
                                                 are now (changed since, or never marked) -> when found (ms): its
                                                 archiver archives them again
archive:stores                  home   hash      archive store id -> when its archiver last ran (ms): the stores
                                                 retention waits for
queue:{group}                   shard  zset      unassigned open conversations, score priority*1e13+due_ms
waiting:{group}                 shard  zset      same members, score waiting-since ms (oldest wait)
agent:{name}                    shard  set       conversations assigned to the agent
events:{group}                  shard  stream    live events for the group's consoles (capped)
outbox:{channel}                shard  stream    replies in flight (``item``), group ``senders``; deleted once recorded
delivery:{conv}                 shard  hash      reply id -> delivery status
labels                          shard  stream    agents' corrections (transfer, priority change): the routed message
                                                 as its history stores it, the group and priority it has now;
                                                 capped ~100,000 (router/labels.py)
actions                         shard  stream    button presses from every channel (``press``: JSON, router/actions.py)
                                                 in the shard of the conversation key; consumers' own groups; capped
pressed:{channel}:{account}:{id} shard string    "1" once that platform press was appended (TTL)
stats                           shard  hash      counters (in:, dup:, refused:, routed:{channel}, dead, kb:...,
                                                 assign:{assigned|reoffered|overflowed|requeued_offline}:{group}, ...)
answer:{id}                     shard  hash      the knowledge-base answer sent on conversation {id}
                                                 (router/answerer.py): answer id, article, lang, score,
                                                 gap, kb version, at, outcome (confirmed, assumed,
                                                 reopened, human), outcome_ms
answered                        shard  zset      conversations answered with no outcome yet -> answered at
                                                 (ms): the assumed-resolved sweeper's index
answers:shadow                  shard  stream    would-be answers in shadow mode: conv, group, article, lang,
                                                 score, gap, kb; capped ([answers] shadow_max)
answers:lock                    shard  string    one assumed-resolved sweeper at a time per shard (TTL)
csat:due                        shard  zset      closed conversation id -> when its satisfaction survey is due (ms):
                                                 written by conv.lua's close, read by the survey service
                                                 (router/csat.py); the survey's state is in conv:{id}
                                                 (csat_state, csat_id, csat_agent, csat_rating, csat_until)
csat:asked:{channel}:{account}:{user}
                                shard  string    "1" while that user was asked (TTL [csat] cooldown_days)
lease:csat                      shard  hash      the survey service's lease on the shard (fenced, as lease:sla)
health:{kind}:{name}            home   string    JSON health record with a TTL (worker, lane, adapter, supervisor)
lease:{name}                    home   hash      a fenced lease (router/leases.py): owner, fence, until (ms);
                                                 PX TTL. Names: ``adapter:{channel}:{account}``
lease:shard:{i}                 shard  hash      shard i's lease, held by the worker process that reads it
                                                 (router/shardlease.py; in the shard's slot: route.lua and
                                                 dead.lua check the worker's fence against it)
fence:{name}                    either string    the last fence number handed out for lease {name} (no TTL),
                                                 beside its lease
members:{group}                 home   zset      live members of a group -> heartbeat expiry (ms), PX TTL
                                                 (router/membership.py; ``routers``: the worker processes)
cursor:{channel}:{account}      home   hash      an adapter's durable positions (update offset, UIDs ...)
{channel}:…                     home   any       a channel's private data: its ``ChannelContext.store``
                                                 (router/channel.py), e.g. ``sandbox:{user}`` (stream:
                                                 replies delivered to a sandbox user), ``email:mid:
                                                 {account}:{msgid}`` (e-mail thread index, TTL),
                                                 ``discord:buttons:{account}:{message id}`` (the
                                                 conversation key of a reply with buttons, TTL 30 d)
rules:active                    home   string    published rule-set version number
rules:v:{n}                     home   hash      a published rule set: source, author, at, version hash
rules:log                       home   stream    publish / rollback log
rules:seq                       home   string    last rule-set version number handed out
sla:active, sla:v:{n},          home   ...       published SLA policies (router/slastore.py), as rules:*:
sla:log, sla:seq                                 source, author, at, version digest; the log; the sequence
assignment:active,              home   ...       published assignment policies (router/assignstore.py), as
assignment:v:{n}, :log, :seq                     rules:*
sla:due                         shard  zset      conversation id -> when its SLA clock must be evaluated next
                                                 (ms): written by route.lua and conv.lua, read and moved by
                                                 the SLA timer (router/slatimer.py)
sla:fired:{id}                  shard  set       escalation step ids and outcome ids (met/breached) of a
                                                 conversation already carried out: checked in the script
                                                 that does the effect, so each happens once
lease:sla                       shard  hash      the shard's SLA timer lease (router/slatimer.py; fenced, in
                                                 the shard's slot: conv.lua's ``sla`` op checks the fence)
model:seq                       home   string    last published triage model version number
model:v:{n}                     home   hash      a published model: digest, author, at, comment, files (names
                                                 and sizes, JSON), meta (its triage.json)
model:files:{n}                 home   hash      its files: name -> bytes (a few MB)
model:live                      home   string    the live version (routes); none: the configured model
model:shadow                    home   string    the shadow version (asked beside the live one, never routes)
model:lives                     home   list      versions made live, newest first (rollback pops)
model:log                       home   stream    publish / live / shadow / rollback log
model:observed                  home   stream    the shadow's and live model's answers beside each routed
                                                 message (router/modelstore.py), capped ~20,000
kb:seq                          home   string    last published knowledge-base version number
kb:v:{n}                        home   hash      a published knowledge base: digest, author, at, comment, groups
                                                 (JSON: the rule set's when published), files (JSON: <article
                                                 id>/<lang>.md -> Markdown, canonical form)
kb:active                       home   string    the knowledge base in force; none: the configured or shipped one
kb:log                          home   stream    publish / rollback log
kb:vectors:{embedder}           home   hash      embeddings of articles' texts and example questions: text
                                                 digest -> float32 bytes, shared by every version
                                                 (router/kbstore.py)
req:{id}                        both   string    a write's result under its request id (TTL 1 day), see
                                                 router/requests.py: a conversation write's in its
                                                 shard, a publish's (rules) at home
users                           home   set       web console user names
user:{name}                     home   hash      a console user: role, groups (JSON), argon2 hash, token digest
session:{digest}                home   string    a console session (JSON: user, csrf token), TTL; keyed digest
token:{digest}                  home   string    user name of an API token (keyed digest of the token)
ratelimit:{kind}:{who}          home   string    failed-login counter with the window as TTL
canned                          home   hash      canned responses: title -> text
web:secret                      home   string    generated session secret when none is configured
samples                         home   stream    the dashboard's time series (field ``s``: JSON sample), capped
samples:lock                    home   string    one sampler per interval across console processes (TTL)
report:weekly:{week}:{to}       home   string    the weekly summary of ISO week {week} (2026-W45) to recipient {to}
                                                 (email, telegram): "sending ..." while a replica sends it (SET NX,
                                                 PX [reports] claim_s), "sent ..." once sent (TTL 8 weeks)
                                                 (router/weekly.py)
shards                          home   string    the shard count, recorded at the first start (router/shards.py)
agents                          home   set       names of agents with a presence or profile (router/presence.py)
ag:{name}                       home   hash      an agent's presence and profile: status (online/away/offline), beat
                                                 (last heartbeat, ms), groups/langs/tags (JSON), cap:{channel} and
                                                 n:{channel} (capacity and open assignments per channel), last (ms)
load:{name}                     home   hash      conversation id -> "channel token": the agent's open and reserved
                                                 assignments, counted in n:{channel} (router/assignment.py)
resv                            home   hash      conversation id -> reservation in flight (JSON: agent, token,
                                                 channel, until ms) between the two steps of an assignment
resv:due                        home   zset      conversation id -> its reservation's expiry (ms): the reconciler's
rr:{group}                      home   string    the agent a round-robin group assigned last
offers                          shard  zset      conversation id -> re-offer deadline (ms) of an automatic assignment
impostors:open                  home   zset      impostor cases waiting for a moderator -> first flagged (ms)
impostors:case:{platform}:{account}:{user}
                                home   hash      one member's case (router/impostors.py): names, verdict,
                                                 reason, staff alike, where, seen count, status, decision
impostors:log                   home   stream    cases opened, dismissed and confirmed (``event``: JSON), capped
adm:{channel}:{sender}          shard  string    a token bucket of the conversations a sender started (lua/route.lua):
                                                 "theoretical-arrival-ms latest-conversation", PX TTL; the bucket of
                                                 their messages in a conversation is its field adm:{sender}
senders:blocked                 home   hash      ``{channel}:{sender id}`` -> banned or muted (JSON: mode, until_ms,
                                                 reason, by, at_ms; router/admission.py), read by every worker
incidents                       home   zset      incident id -> opened at (ms) (router/incidents.py)
incident:seq                    home   string    last incident number
incident:{id}                   home   hash      an incident: title, matcher, texts and resolution (JSON per
                                                 language), state (open, resolving, resolved), who, times, counts
incident:log:{id}               home   stream    the incident's history: opened, texts changed, resolving, resolved
incident:done:{id}              home   set       shards whose resolution broadcast is finished
incident:cursor                 home   hash      the linker's position in each group event stream
                                                 (router/incident_link.py)
incidents:open                  shard  set       open incidents: the link script links only to these
incidents:resolving             shard  set       incidents whose resolution the shard's broadcaster sends
incident:linked:{id}            shard  set       conversations linked to the incident (kept after it resolves)
incident:sent:{id}              shard  set       linked conversations its resolution was queued for: checked
                                                 in the script that queues it, so each gets it once
incident:held:{id}:{group}      shard  zset      the group's conversations collapsed under the incident, score
                                                 as queue:{group}'s
lease:incident                  shard  hash      the shard's broadcast lease (fenced, checked by incident.lua)
tagrate:m:{minute}              shard  hash      tag -> new conversations with it in that minute (epoch minute), TTL 2 h
tagrate:h:{hour}                shard  hash      the same per hour (epoch hour), TTL 26 h: the surge detector's baseline
                                                 (router/surge.py)
served:{group}:{minute}         shard  string    conversations taken from the group's queue in that minute (epoch
                                                 minute: claim, assignment, an agent's reply or close), TTL 121 min:
                                                 the service rate of wait estimates (docs/waits.md)
online:{group}                  shard  string    agents online in the group now (router/online.py), TTL 3 periods
online:{group}:{minute}         shard  string    the same for that minute, TTL 121 min: who served the window's
                                                 departures (docs/waits.md)
waits                           shard  stream    a said wait beside the real one, when its conversation is first
                                                 taken: group, conv, est_ms, min, max (minutes), real_ms, at;
                                                 capped ~10,000 (router/waits.py)
==============================  =====  ========  ==========================================================

How long each key is kept (retention): docs/operations.md, "Retention".

The Lua scripts derive keys from the prefix they are given too (see router/lua/common.lua): a
shard's prefix for the scripts of routing and conversations. Why each key is where it is, and what
shard count to choose: docs/architecture.md, "Scale-out and Redis Cluster".
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

ROUTER_GROUP = "routers"
#: The streams router workers read, each through its own group ``routers``: the P1 lane first.
STREAMS = ("lane", "inbox")
SENDER_GROUP = "senders"
#: The answerer's consumer group on the group event streams and on the press streams.
ANSWER_GROUP = "answerer"
#: The satisfaction surveys' consumer group on the press streams (router/csat.py).
CSAT_GROUP = "csat"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "sb:"

    @property
    def inbox(self) -> str:
        return self.prefix + "inbox"

    @property
    def lane(self) -> str:
        return self.prefix + "lane"

    def stream(self, name: str) -> str:
        """A stream the router workers read: ``inbox`` or ``lane`` (``STREAMS``)."""
        return self.prefix + name

    def failures_of(self, stream: str) -> str:
        """The failure records of a stream's entries (``STREAMS``): entry ids are unique per
        stream only."""
        return self.failures if stream == "inbox" else f"{self.prefix}{stream}:failures"

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

    # -- the archive of closed conversations (router/archive.py) ---------------------------------
    def archived(self, store: str) -> str:
        return f"{self.prefix}archived:{store}"

    def archive_cursor(self, store: str) -> str:
        return f"{self.prefix}archive:cursor:{store}"

    def archive_again(self, store: str) -> str:
        return f"{self.prefix}archive:again:{store}"

    @property
    def archive_stores(self) -> str:
        return self.prefix + "archive:stores"

    def queue(self, group: str) -> str:
        return f"{self.prefix}queue:{group}"

    def waiting(self, group: str) -> str:
        return f"{self.prefix}waiting:{group}"

    def served(self, group: str, minute: int) -> str:
        return f"{self.prefix}served:{group}:{minute}"

    def online(self, group: str, minute: int | None = None) -> str:
        return f"{self.prefix}online:{group}" + ("" if minute is None else f":{minute}")

    @property
    def waits(self) -> str:
        return self.prefix + "waits"

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

    @property
    def actions(self) -> str:
        return self.prefix + "actions"

    # -- satisfaction surveys (router/csat.py, lua/csat.lua) ---------------------------------------
    @property
    def csat_due(self) -> str:
        return self.prefix + "csat:due"

    # -- knowledge-base answers (router/answerer.py, lua/answer.lua) -------------------------------
    def answer(self, conv_id: str) -> str:
        return f"{self.prefix}answer:{conv_id}"

    @property
    def answered(self) -> str:
        return self.prefix + "answered"

    @property
    def answers_shadow(self) -> str:
        return self.prefix + "answers:shadow"

    @property
    def answers_lock(self) -> str:
        return self.prefix + "answers:lock"

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

    # -- published versions of any kind (router/published.py): rules, sla, assignment --------
    def published_active(self, kind: str) -> str:
        return f"{self.prefix}{kind}:active"

    def published_version(self, kind: str, n: int) -> str:
        return f"{self.prefix}{kind}:v:{n}"

    def published_log(self, kind: str) -> str:
        return f"{self.prefix}{kind}:log"

    def published_seq(self, kind: str) -> str:
        return f"{self.prefix}{kind}:seq"

    # -- SLA timers (router/slatimer.py), per shard ------------------------------------------------
    @property
    def sla_due(self) -> str:
        return self.prefix + "sla:due"

    def sla_fired(self, conv_id: str) -> str:
        return f"{self.prefix}sla:fired:{conv_id}"

    # -- incidents (router/incidents.py): the home keys, then the shard keys ---------------------
    @property
    def incidents(self) -> str:
        return self.prefix + "incidents"

    @property
    def incident_seq(self) -> str:
        return self.prefix + "incident:seq"

    def incident(self, incident_id: str) -> str:
        return f"{self.prefix}incident:{incident_id}"

    def incident_log(self, incident_id: str) -> str:
        return f"{self.prefix}incident:log:{incident_id}"

    def incident_done(self, incident_id: str) -> str:
        return f"{self.prefix}incident:done:{incident_id}"

    @property
    def incident_cursor(self) -> str:
        return self.prefix + "incident:cursor"

    @property
    def incidents_open(self) -> str:
        return self.prefix + "incidents:open"

    @property
    def incidents_resolving(self) -> str:
        return self.prefix + "incidents:resolving"

    def incident_linked(self, incident_id: str) -> str:
        return f"{self.prefix}incident:linked:{incident_id}"

    def incident_sent(self, incident_id: str) -> str:
        return f"{self.prefix}incident:sent:{incident_id}"

    def incident_held(self, incident_id: str, group: str) -> str:
        return f"{self.prefix}incident:held:{incident_id}:{group}"

    def tag_rate(self, unit: str, n: int) -> str:
        """``unit`` m (epoch minute ``n``) or h (epoch hour ``n``)."""
        return f"{self.prefix}tagrate:{unit}:{n}"

    # -- the weekly summary (router/weekly.py) ---------------------------------------------------
    def weekly_report(self, week: str, to: str) -> str:
        """``week``: ISO week, e.g. 2026-W45; ``to``: the recipient (email, telegram)."""
        return f"{self.prefix}report:weekly:{week}:{to}"

    # -- published knowledge bases (router/kbstore.py) -------------------------------------------
    @property
    def kb_seq(self) -> str:
        return self.prefix + "kb:seq"

    def kb_version(self, n: int) -> str:
        return f"{self.prefix}kb:v:{n}"

    @property
    def kb_active(self) -> str:
        return self.prefix + "kb:active"

    @property
    def kb_log(self) -> str:
        return self.prefix + "kb:log"

    def kb_vectors(self, embedder: str) -> str:
        return f"{self.prefix}kb:vectors:{embedder}"

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

    # -- presence, capacity and assignment (router/presence.py, router/assignment.py) -------------
    @property
    def agents(self) -> str:
        return self.prefix + "agents"

    def agent_state(self, name: str) -> str:
        return f"{self.prefix}ag:{name}"

    def load(self, name: str) -> str:
        return f"{self.prefix}load:{name}"

    @property
    def reservations(self) -> str:
        return self.prefix + "resv"

    @property
    def reservations_due(self) -> str:
        return self.prefix + "resv:due"

    @property
    def offers(self) -> str:
        return self.prefix + "offers"

    @property
    def impostors_open(self) -> str:
        return self.prefix + "impostors:open"

    def impostor_case(self, case_id: str) -> str:
        return self.prefix + "impostors:case:" + case_id

    @property
    def impostors_log(self) -> str:
        return self.prefix + "impostors:log"

    def sender_admission(self, channel: str, sender: str) -> str:
        return self.prefix + "adm:" + channel + ":" + sender

    @property
    def senders_blocked(self) -> str:
        return self.prefix + "senders:blocked"

    @property
    def shard_count(self) -> str:
        return self.prefix + "shards"


def entry_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (ms, sequence): the entries of several shards' streams
    merge by it into one time order."""
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def hash_tag(prefix: str) -> tuple[int, int] | None:
    """The positions of the braces of ``prefix``'s hash tag, as Redis finds it (the first '{' and
    the first '}' after it, with something between), or None."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start >= 0 else -1
    return (start, end) if end > start + 1 else None


def shard_prefix(prefix: str, shard: int, count: int) -> str:
    """The key prefix of shard ``shard`` of ``count``: ``prefix`` itself for one shard (the layout
    of a deployment without shards), else ``prefix`` with its hash tag replaced by
    ``{<tag>.s<shard>.<k>}`` (``prefix{s<shard>.<k>}:`` when it has none) for the smallest k whose
    slot is in the shard's slice of the 16384 slots, ``[shard*16384/count, (shard+1)*16384/count)``.

    ``redis-cli --cluster create`` gives each primary a contiguous slot range, so shards cut in
    contiguous slices spread evenly over the primaries; a tag chosen by name alone (``{s17}``)
    falls where CRC16 puts it, and 16 shards on 3 primaries came out 4/7/5.
    """
    if not 0 <= shard < count <= REDIS_CLUSTER_HASH_SLOTS:
        raise ValueError(f"shard {shard} of {count}: want 0 <= shard < count <= {REDIS_CLUSTER_HASH_SLOTS}")
    if count == 1:
        return prefix
    low = shard * REDIS_CLUSTER_HASH_SLOTS // count
    high = (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // count
    tag = hash_tag(prefix)
    base = prefix[tag[0] + 1 : tag[1]] + "." if tag else ""
    k = 0
    while not low <= key_slot(f"{base}s{shard}.{k}".encode()) < high:
        k += 1  # about 16384/count tries on average
    name = f"{base}s{shard}.{k}"
    if tag:
        return prefix[: tag[0] + 1] + name + prefix[tag[1] :]
    return f"{prefix}{{{name}}}:"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True)
class Shards:
    """The deployment's keys split into ``count`` virtual shards (docs/architecture.md, "Scale-out
    and Redis Cluster"): ``home`` holds the keys no routing script touches, ``shard[i]`` those of
    the conversations and messages of shard i. With one shard, shard 0 is the home prefix.

    A conversation's id tells its shard: ``id = n * count + shard``, n its shard's ``seq:conv``.
    """

    prefix: str = "sb:"
    count: int = 1
    home: Keys = field(init=False)
    shard: tuple[Keys, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Keys(self.prefix))
        shards = tuple(Keys(shard_prefix(self.prefix, i, self.count)) for i in range(self.count))
        object.__setattr__(self, "shard", shards)

    def of_key(self, channel: str, account: str, key: str) -> int:
        """The shard of the messages of a conversation key: a stable hash (CRC32, the same in
        every process) of channel, account and key, so one conversation stays in one shard."""
        return zlib.crc32(f"{channel}:{account}:{key}".encode()) % self.count

    def of_conv(self, conv_id: str | int) -> int:
        """The shard of a conversation id; ``ValueError`` when it is not one (with one shard any
        id is shard 0's, read as before shards: an unknown one is simply not found)."""
        if self.count == 1:
            return 0
        n = int(conv_id)
        if n < 1:
            raise ValueError(f"conversation id {conv_id!r}: not a positive number")
        return n % self.count

    def conv_keys(self, conv_id: str | int) -> Keys:
        """The keys of the shard holding conversation ``conv_id``."""
        return self.shard[self.of_conv(conv_id)]

    def glob(self, pattern: str) -> str:
        """A SCAN pattern for the keys ``pattern`` (after the prefix) of every shard: one walk of
        the keyspace instead of one per shard (the result may hold a key of none: use ``split``)."""
        if self.count == 1:
            return self.prefix + pattern
        tag = hash_tag(self.prefix)
        if tag is None:
            return f"{_glob_escape(self.prefix)}{{s*}}:{pattern}"
        head, base, tail = self.prefix[: tag[0] + 1], self.prefix[tag[0] + 1 : tag[1]], self.prefix[tag[1] :]
        return f"{_glob_escape(head + base)}.s*{_glob_escape(tail)}{pattern}"

    def split(self, key: str) -> tuple[int, str] | None:
        """The shard of ``key`` and the key after its shard's prefix; None when in no shard."""
        for i, keys in enumerate(self.shard):
            if key.startswith(keys.prefix):
                return i, key.removeprefix(keys.prefix)
        return None

    def conv_id(self, n: int, shard: int) -> int:
        """The id of the ``n``-th conversation of ``shard``."""
        return n * self.count + shard

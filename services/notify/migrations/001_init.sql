-- notify: subscriptions, endpoints, templates, deliveries, the inbox, and the
-- record of admin actions. PostgreSQL is the record of every delivery's state;
-- Redis holds only the queues (docs/notify.md, "Queue design").

-- Where deliveries for systems go: a webhook URL (signed), a fixed email
-- address (a unit's mailbox) or a fixed phone for SMS.
CREATE TABLE endpoint (
  id               bigserial PRIMARY KEY,
  name             text NOT NULL UNIQUE,
  channel          text NOT NULL CHECK (channel IN ('webhook','email','sms')),
  url              text,
  address          text,
  secret           text,
  previous_secret  text,
  previous_until_ms bigint,
  rate_per_sec     integer CHECK (rate_per_sec >= 0),   -- NULL: notify.rate_per_sec; 0: no limit
  rate_burst       integer CHECK (rate_burst >= 1),     -- NULL: notify.rate_burst
  status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active','disabled')),
  failing_since_ms bigint,
  disabled_at      timestamptz,
  disabled_reason  text,
  created_by       text NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CHECK (channel <> 'webhook' OR (url IS NOT NULL AND secret IS NOT NULL)),
  CHECK (channel = 'webhook' OR address IS NOT NULL)
);

-- Which events go where. scope_kind/scope_value narrow the events
-- (all | region code prefix | village | unit | team | household | person);
-- target 'endpoint' sends each matching event to endpoint_id, target
-- 'people' to the persons the event concerns, on each of channels.
CREATE TABLE subscription (
  id           bigserial PRIMARY KEY,
  name         text NOT NULL,
  type_prefix  text NOT NULL,
  scope_kind   text NOT NULL DEFAULT 'all'
               CHECK (scope_kind IN ('all','region','village','unit','team','household','person')),
  scope_value  text,
  target       text NOT NULL CHECK (target IN ('endpoint','people')),
  endpoint_id  bigint REFERENCES endpoint(id),
  channels     text[] NOT NULL DEFAULT '{}',
  locale       text NOT NULL DEFAULT 'zh-CN' CHECK (locale IN ('zh-CN','en')),
  active       boolean NOT NULL DEFAULT true,
  deleted_at   timestamptz,
  created_by   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  CHECK ((target = 'endpoint') = (endpoint_id IS NOT NULL))
);
CREATE INDEX subscription_live ON subscription (type_prefix) WHERE deleted_at IS NULL AND active;

-- Templates per event type (or '*' for the generic fallback) and locale.
CREATE TABLE template (
  type        text NOT NULL,
  locale      text NOT NULL CHECK (locale IN ('zh-CN','en')),
  subject     text NOT NULL,
  body        text NOT NULL,
  updated_by  text NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (type, locale)
);

-- Events that produced at least one delivery (the webhook body is made
-- from payload, the msgpack CloudEvent as the relay wrote it).
CREATE TABLE event (
  id          text PRIMARY KEY,
  type        text NOT NULL,
  payload     bytea NOT NULL,
  stream_id   text,
  received_at timestamptz NOT NULL DEFAULT now()
);

-- One delivery per (event, subscription, recipient, channel); id is a hash
-- of those four, so an event seen twice is delivered once.
--   pending  queued (in the channel's Redis stream)
--   sending  a worker holds it until lease_until (then it can be reclaimed)
--   retry    failed, due again at due_ms (in the Redis retry set)
--   held     its endpoint is disabled; re-queued when it is enabled again
--   sent     done
--   dead     gave up after max attempts (in the dead-letter stream)
--   dropped  an admin dropped it from the dead letters
CREATE TABLE delivery (
  id              text PRIMARY KEY,
  event_id        text NOT NULL REFERENCES event(id),
  event_type      text NOT NULL,
  subscription_id bigint NOT NULL REFERENCES subscription(id),
  endpoint_id     bigint REFERENCES endpoint(id),
  channel         text NOT NULL CHECK (channel IN ('webhook','email','sms','inbox')),
  recipient       text NOT NULL,
  address         text,
  subject         text,
  body            text,
  state           text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending','sending','retry','held','sent','dead','dropped')),
  attempts        integer NOT NULL DEFAULT 0,
  due_ms          bigint,
  lease_until     timestamptz,
  last_error      text,
  last_status     integer,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  sent_at         timestamptz,
  dead_at         timestamptz
);
CREATE INDEX delivery_unfinished ON delivery (state, created_at)
  WHERE state IN ('pending','sending','retry','held');
CREATE INDEX delivery_dead ON delivery (dead_at, id) WHERE state = 'dead';
CREATE INDEX delivery_event ON delivery (event_id);
CREATE INDEX delivery_endpoint ON delivery (endpoint_id, state);

-- The in-app inbox: one row per inbox delivery, for one person ("cadre:42").
CREATE TABLE inbox (
  id          text PRIMARY KEY,
  person      text NOT NULL,
  event_id    text NOT NULL,
  event_type  text NOT NULL,
  title       text NOT NULL,
  body        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  acked_at    timestamptz,
  acked_by    text
);
CREATE INDEX inbox_person ON inbox (person, created_at DESC, id);

-- Every admin action: who, what, with which parameters, when.
CREATE TABLE admin_action (
  id          bigserial PRIMARY KEY,
  actor       text NOT NULL,
  method      text NOT NULL,
  request_id  text,
  detail      text NOT NULL,
  at          timestamptz NOT NULL DEFAULT now()
);

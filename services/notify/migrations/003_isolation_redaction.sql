-- Circuit breaker per endpoint (docs/notify.md "Isolation"): failures in a
-- row without an answer from the receiver, how often it tripped since its
-- last success, and until when (notify clock, ms) its deliveries wait.
ALTER TABLE endpoint ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0;
ALTER TABLE endpoint ADD COLUMN breaker_trips integer NOT NULL DEFAULT 0;
ALTER TABLE endpoint ADD COLUMN paused_until_ms bigint;

-- Secrets never stay in the admin record (issue 9.7): earlier versions
-- stored endpoint.create / endpoint.rotate_secret parameters verbatim.
-- Secrets are whsec_ + base64, so they hold no quote or backslash.
UPDATE admin_action
   SET detail = regexp_replace(detail, '"(secret|previous_secret|password|token)":"[^"]*"',
                               '"\1":"[redacted]"', 'g')
 WHERE detail ~ '"(secret|previous_secret|password|token)":"';

-- URLs with user info (user:password@) are refused now; existing ones lose
-- the credentials, in the endpoint and in the admin record, and such an
-- endpoint is disabled until an admin gives it a URL again.
UPDATE admin_action
   SET detail = regexp_replace(detail, '(https?://)[^/"@?#]*@', '\1', 'gi')
 WHERE detail ~* 'https?://[^/"@?#]*@';
UPDATE endpoint
   SET url = regexp_replace(url, '^(https?://)[^/@?#]*@', '\1', 'i'),
       status = 'disabled', disabled_at = now(),
       disabled_reason = 'url carried user info (removed); set the url again',
       updated_at = now()
 WHERE url ~* '^https?://[^/@?#]*@';

-- Retention (notify.retention_*): the jobs delete by age in batches.
CREATE INDEX delivery_finished_age ON delivery (updated_at) WHERE state IN ('sent','dropped');
CREATE INDEX inbox_age ON inbox (created_at);
CREATE INDEX admin_action_age ON admin_action (at);

-- endpoint.test is asynchronous (docs/notify.md "Isolation"): the method
-- records a request and returns its id; a tester thread sends it with a
-- short timeout and writes the outcome here; endpoint.test_result reads it.
CREATE TABLE endpoint_test (
  id           text PRIMARY KEY,
  endpoint_id  bigint NOT NULL REFERENCES endpoint(id),
  requested_by text NOT NULL,
  requested_at timestamptz NOT NULL DEFAULT now(),
  state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','running','done')),
  started_at   timestamptz,
  finished_at  timestamptz,
  ok           boolean,
  status       integer,
  error        text,
  ms           integer,
  webhook_id   text
);
CREATE INDEX endpoint_test_pending ON endpoint_test (requested_at) WHERE state <> 'done';
CREATE INDEX endpoint_test_age ON endpoint_test (requested_at);

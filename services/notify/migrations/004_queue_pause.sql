-- Paused queues (queues.pause / queues.resume) are kept here, the truth:
-- the Redis set bangfu:notify:paused is a copy notify rebuilds from this
-- table whenever it finds the copy missing (Redis restarted without its
-- data, or flushed), so losing Redis never undoes a pause (docs/notify.md).
CREATE TABLE queue_pause (
  queue     text PRIMARY KEY,
  paused_by text NOT NULL,
  paused_at timestamptz NOT NULL DEFAULT now()
);

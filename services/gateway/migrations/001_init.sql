-- gateway: the people who sign in to the HTTP API and the console, and their
-- sessions (docs/http.md). Passwords are scrypt hashes (never the password);
-- a session is stored only as the SHA-256 of its bearer token.
CREATE TABLE "user" (
  username       text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
  password_hash  text NOT NULL,
  roles          text[] NOT NULL DEFAULT '{}',
  region         text CHECK (region ~ '^[0-9]{12}$'),
  cadre_id       bigint CHECK (cadre_id > 0),
  disabled       boolean NOT NULL DEFAULT false,
  -- failed sign-ins in the current window (gateway.login_window_s)
  failed_logins  integer NOT NULL DEFAULT 0,
  failed_since   timestamptz,
  last_login_at  timestamptz,
  created_by     text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_by     text,
  updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE session (
  token_sha256  text PRIMARY KEY CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
  username      text NOT NULL REFERENCES "user" (username) ON DELETE CASCADE,
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL,
  peer          text
);
CREATE INDEX session_username ON session (username);
CREATE INDEX session_expires ON session (expires_at);

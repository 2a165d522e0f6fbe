-- drive-poller slice: drive_polls, one row per watched folder, with the
-- scheduling and lease state of its poller. Runs as ca_drive_poller.

CREATE FUNCTION drive_polls_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := timezone('UTC', now());
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION drive_polls_set_updated_at() FROM PUBLIC;

CREATE TABLE drive_polls (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID REFERENCES users(id) ON DELETE CASCADE,

    -- Polling
    folder_id VARCHAR(255) NOT NULL,
    last_poll_at TIMESTAMP NOT NULL DEFAULT NOW(),  -- default: addition
    last_modified_time TIMESTAMP,
    files_found INT DEFAULT 0,

    -- Status: success, error, rate_limited
    poll_status VARCHAR(20) DEFAULT 'success',
    error_message TEXT,

    -- Timestamps
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW(),

    -- additions: scheduling and state
    output_folder_id VARCHAR(255),
    changes_page_token TEXT,                         -- Drive changes API cursor
    next_poll_at TIMESTAMP NOT NULL DEFAULT NOW(),
    lease_owner TEXT,                                -- poller instance holding the row
    lease_expires_at TIMESTAMP,
    consecutive_errors INT NOT NULL DEFAULT 0,
    backoff_until TIMESTAMP,
    last_full_scan_at TIMESTAMP,                     -- NULL: a full scan is due
    active BOOLEAN NOT NULL DEFAULT TRUE,
    stopped_reason TEXT,

    CONSTRAINT drive_polls_user_id_folder_id_key UNIQUE (user_id, folder_id)
);

CREATE INDEX idx_drive_polls_user_id ON drive_polls(user_id);
CREATE INDEX idx_drive_polls_folder_id ON drive_polls(folder_id);
CREATE INDEX idx_drive_polls_last_poll ON drive_polls(last_poll_at);
-- additions: the scheduler's query, and one active watch per user
CREATE INDEX idx_drive_polls_due ON drive_polls(next_poll_at) WHERE active;
CREATE UNIQUE INDEX idx_drive_polls_one_active_per_user ON drive_polls(user_id) WHERE active;

CREATE TRIGGER drive_polls_set_updated_at BEFORE UPDATE ON drive_polls
    FOR EACH ROW EXECUTE FUNCTION drive_polls_set_updated_at();

-- Starts (or restarts) watching a folder for a user. Any other folder the user
-- watched is stopped (stopped_reason 'replaced'). The row is due at once, its
-- error state is cleared, and a full scan is due (last_full_scan_at NULL) so
-- images already in the folder are found. p_start_page_token NULL keeps the
-- stored token. Returns the drive_polls id.
CREATE FUNCTION drive_polls_start_watch(p_user_id uuid, p_folder_id text,
                                        p_output_folder_id text, p_start_page_token text)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    poll_id uuid;
BEGIN
    IF p_user_id IS NULL OR p_folder_id IS NULL THEN
        RAISE EXCEPTION 'user_id and folder_id are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- serialize start/stop per user (one active watch per user)
    PERFORM pg_advisory_xact_lock(hashtext('ca_drive_watch'), hashtext(p_user_id::text));

    UPDATE drive_polls
       SET active = FALSE, stopped_reason = 'replaced', lease_owner = NULL, lease_expires_at = NULL
     WHERE user_id = p_user_id AND active AND folder_id <> p_folder_id;

    INSERT INTO drive_polls AS d (user_id, folder_id, output_folder_id, changes_page_token,
                                  last_poll_at, next_poll_at, active)
    VALUES (p_user_id, p_folder_id, p_output_folder_id, p_start_page_token,
            timezone('UTC', now()), timezone('UTC', now()), TRUE)
    ON CONFLICT ON CONSTRAINT drive_polls_user_id_folder_id_key DO UPDATE
       SET output_folder_id = COALESCE(EXCLUDED.output_folder_id, d.output_folder_id),
           changes_page_token = COALESCE(EXCLUDED.changes_page_token, d.changes_page_token),
           next_poll_at = EXCLUDED.next_poll_at,
           active = TRUE,
           stopped_reason = NULL,
           consecutive_errors = 0,
           backoff_until = NULL,
           last_full_scan_at = NULL,
           poll_status = 'success',
           error_message = NULL
    RETURNING d.id INTO poll_id;
    RETURN poll_id;
END
$$;

-- Stops watching: every active row of the user becomes inactive. Returns how
-- many rows were stopped.
CREATE FUNCTION drive_polls_stop_watch(p_user_id uuid, p_reason text DEFAULT 'user_stopped')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    n integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ca_drive_watch'), hashtext(p_user_id::text));
    UPDATE drive_polls
       SET active = FALSE, stopped_reason = COALESCE(p_reason, 'user_stopped'),
           lease_owner = NULL, lease_expires_at = NULL
     WHERE user_id = p_user_id AND active;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION drive_polls_start_watch(uuid, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION drive_polls_stop_watch(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drive_polls_start_watch(uuid, text, text, text) TO ca_api_gateway;
GRANT EXECUTE ON FUNCTION drive_polls_stop_watch(uuid, text) TO ca_api_gateway;

GRANT SELECT ON drive_polls TO ca_api_gateway;

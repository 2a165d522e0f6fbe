-- Issue 14 (database): drive_polls_start_watch / stop_watch check the caller's
-- user the way jobs_retry does: p_user_id must be the transaction's RLS user
-- (app.user_id, which the gateway's pool sets to the signed-in user), so a
-- gateway bug that passes another id cannot start or stop another user's
-- watch (insufficient_privilege, 42501). A superuser session (an operator,
-- the tests) is exempt: it could change drive_polls directly anyway; serve
-- never runs as one (common/daemon.c). Same signatures: owner and grants stay.

CREATE OR REPLACE FUNCTION drive_polls_start_watch(p_user_id uuid, p_folder_id text,
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
    IF p_user_id IS NULL
       OR (p_user_id IS DISTINCT FROM NULLIF(current_setting('app.user_id', true), '')::uuid
           AND NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user)) THEN
        RAISE EXCEPTION 'drive_polls_start_watch: the user must be the transaction''s app.user_id'
            USING ERRCODE = 'insufficient_privilege';
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
CREATE OR REPLACE FUNCTION drive_polls_stop_watch(p_user_id uuid, p_reason text DEFAULT 'user_stopped')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    n integer;
BEGIN
    IF p_user_id IS NULL
       OR (p_user_id IS DISTINCT FROM NULLIF(current_setting('app.user_id', true), '')::uuid
           AND NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user)) THEN
        RAISE EXCEPTION 'drive_polls_stop_watch: the user must be the transaction''s app.user_id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ca_drive_watch'), hashtext(p_user_id::text));
    UPDATE drive_polls
       SET active = FALSE, stopped_reason = COALESCE(p_reason, 'user_stopped'),
           lease_owner = NULL, lease_expires_at = NULL
     WHERE user_id = p_user_id AND active;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;


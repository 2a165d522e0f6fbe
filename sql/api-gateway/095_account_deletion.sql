-- api-gateway slice (issue 15, "the account is the user's"): DELETE /api/me.
--
-- The deletion runs in three steps so that a failure at any point loses
-- nothing and the same request can simply be sent again
-- (docs/api-gateway.md, "Deleting the account"):
--   1. users_deletion_begin: marks the row (deletion_requested_at), stops
--      polling (drive_polls_stop_watch 'account_deleted'), cancels the queued
--      and processing jobs (jobs_cancel: reservations released, a worker on
--      one stops), writes account.deletion_requested, and returns what the
--      gateway needs for the outside world: the sealed Google tokens and the
--      Stripe subscription to cancel. Repeating it changes nothing new.
--   2. (gateway, outside the database) the Google token is revoked, the
--      Stripe subscription set to cancel at the period's end.
--   3. users_delete_account: refuses unless step 1 ran; deletes the user's
--      own presets (ON DELETE SET NULL would turn them into system presets),
--      the archived and live jobs (jobs_forget_user: jobs_archive has no
--      foreign key), clears the IP address of the user's audit rows, writes
--      account.deleted and deletes the users row; the rest cascades
--      (subscriptions, usage_tracking, usage_reservations, email_outbox,
--      drive_polls, ratings, adoptions) or is kept without the user id as the
--      schema says (audit_log, meter_outbox: ON DELETE SET NULL).
-- p_details (what happened at Google and Stripe) goes into the
-- account.deleted audit row, whose ip is not recorded. Both check that the user is the statement's app.user_id.

ALTER TABLE users ADD COLUMN deletion_requested_at timestamp;

CREATE FUNCTION users_deletion_begin(p_user_id uuid, p_ip text)
RETURNS TABLE(email text, access_enc text, refresh_enc text, stripe_subscription_id text,
              cancel_subscription boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    u users%ROWTYPE;
    s record;
    cancelled integer;
BEGIN
    IF p_user_id IS NULL
       OR p_user_id IS DISTINCT FROM NULLIF(current_setting('app.user_id', true), '')::uuid THEN
        RAISE EXCEPTION 'users_deletion_begin: the user must be the transaction''s app.user_id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE users SET deletion_requested_at = COALESCE(deletion_requested_at, timezone('UTC', now()))
     WHERE id = p_user_id
    RETURNING * INTO u;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM drive_polls_stop_watch(p_user_id, 'account_deleted');
    SELECT count(*) INTO cancelled
      FROM jobs j, LATERAL jobs_cancel(p_user_id, j.id) c
     WHERE j.user_id = p_user_id AND j.status IN ('queued', 'processing') AND c = 'ok';
    SELECT sb.stripe_subscription_id, sb.stripe_subscription_ended, sb.status INTO s
      FROM subscriptions sb WHERE sb.user_id = p_user_id;
    INSERT INTO audit_log (user_id, actor, action, target, details, ip)
    VALUES (p_user_id, 'user:' || p_user_id, 'account.deletion_requested', 'user:' || p_user_id,
            jsonb_build_object('jobs_cancelled', cancelled),
            CASE WHEN p_ip ~ '^[0-9a-fA-F:.]+$' THEN p_ip::inet END);
    email := u.email;
    access_enc := u.drive_access_token;
    refresh_enc := u.drive_refresh_token;
    stripe_subscription_id := s.stripe_subscription_id;
    cancel_subscription := s.stripe_subscription_id IS NOT NULL
                           AND NOT COALESCE(s.stripe_subscription_ended, false)
                           AND COALESCE(s.status, '') NOT IN ('canceled', 'incomplete_expired');
    RETURN NEXT;
END
$$;

CREATE FUNCTION users_delete_account(p_user_id uuid, p_ip text, p_details jsonb)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    marked timestamp;
    presets_deleted integer;
    jobs_deleted integer;
BEGIN
    IF p_user_id IS NULL
       OR p_user_id IS DISTINCT FROM NULLIF(current_setting('app.user_id', true), '')::uuid THEN
        RAISE EXCEPTION 'users_delete_account: the user must be the transaction''s app.user_id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT deletion_requested_at INTO marked FROM users WHERE id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    IF marked IS NULL THEN
        RETURN 'not_requested';
    END IF;
    DELETE FROM presets WHERE created_by_user_id = p_user_id;
    GET DIAGNOSTICS presets_deleted = ROW_COUNT;
    jobs_deleted := jobs_forget_user(p_user_id);
    UPDATE audit_log SET ip = NULL WHERE user_id = p_user_id AND ip IS NOT NULL;
    INSERT INTO audit_log (user_id, actor, action, target, details, ip)
    VALUES (p_user_id, 'user:' || p_user_id, 'account.deleted', 'user:' || p_user_id,
            COALESCE(p_details, '{}'::jsonb)
            || jsonb_build_object('presets_deleted', presets_deleted, 'jobs_deleted', jobs_deleted,
                                  'requested_at', to_char(marked, 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
            NULL);
    DELETE FROM users WHERE id = p_user_id;
    RETURN 'ok';
END
$$;

REVOKE ALL ON FUNCTION users_deletion_begin(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION users_delete_account(uuid, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION users_deletion_begin(uuid, text) TO ca_api_gateway;
GRANT EXECUTE ON FUNCTION users_delete_account(uuid, text, jsonb) TO ca_api_gateway;

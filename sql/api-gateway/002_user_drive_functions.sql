-- api-gateway slice: functions through which other slices write users.
-- SECURITY DEFINER (they run as ca_api_gateway), fixed search_path, UTC.

-- Marks a user's Drive authorization as lost (Google said invalid_grant, or the
-- user revoked access). Tokens are kept: the gateway replaces them when the user
-- signs in again, which sets drive_connected back to true.
-- Returns true when this call changed the user from connected to disconnected
-- (so the caller can notify once), false when already disconnected or unknown.
CREATE FUNCTION users_mark_drive_disconnected(p_user_id uuid, p_reason text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    changed boolean;
BEGIN
    UPDATE users
       SET drive_connected = FALSE,
           drive_disconnected_reason = left(p_reason, 1000),
           drive_disconnected_at = timezone('UTC', now())
     WHERE id = p_user_id AND drive_connected
    RETURNING TRUE INTO changed;
    RETURN COALESCE(changed, FALSE);
END
$$;

-- Saves tokens after a refresh. p_refresh_token_enc NULL keeps the stored one
-- (Google usually does not return a new refresh token). Returns false when the
-- user does not exist.
CREATE FUNCTION users_store_drive_tokens(p_user_id uuid, p_access_token_enc text,
                                         p_refresh_token_enc text, p_expires_at timestamp)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF p_access_token_enc IS NULL THEN
        RAISE EXCEPTION 'access token is required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE users
       SET drive_access_token = p_access_token_enc,
           drive_refresh_token = COALESCE(p_refresh_token_enc, drive_refresh_token),
           drive_token_expires_at = p_expires_at
     WHERE id = p_user_id;
    RETURN FOUND;
END
$$;

REVOKE ALL ON FUNCTION users_mark_drive_disconnected(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION users_store_drive_tokens(uuid, text, text, timestamp) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION users_mark_drive_disconnected(uuid, text) TO ca_drive_poller, ca_job_worker;
GRANT EXECUTE ON FUNCTION users_store_drive_tokens(uuid, text, text, timestamp) TO ca_drive_poller, ca_job_worker;

-- Issue 14 (sign-in): a deactivated user (users.is_active = false) does not
-- sign in. users_sign_in is 050_rls.sql's function with one check first: for
-- such a user it changes nothing, writes an auth.login_refused audit row and
-- returns NULL (the gateway answers 403 account_disabled). Same signature, so
-- the owner and the grants stay.
CREATE OR REPLACE FUNCTION users_sign_in(p_google_id text, p_email text, p_name text, p_avatar_url text,
                                         p_access_token_enc text, p_refresh_token_enc text,
                                         p_expires_in_s integer, p_ip text)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    uid uuid;
    inserted boolean;
    prev text := current_setting('app.rls_system', true);
BEGIN
    IF p_google_id IS NULL OR p_email IS NULL OR p_access_token_enc IS NULL THEN
        RAISE EXCEPTION 'google_id, email and access token are required'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM set_config('app.rls_system', 'on', true);
    -- A deactivated user does not sign in: nothing of the row changes.
    SELECT u.id INTO uid FROM users u WHERE u.google_id = p_google_id AND u.is_active IS FALSE;
    IF uid IS NOT NULL THEN
        INSERT INTO audit_log (user_id, actor, action, target, details, ip)
        VALUES (uid, 'user:' || uid, 'auth.login_refused', 'user:' || uid,
                jsonb_build_object('reason', 'account_disabled'),
                CASE WHEN p_ip ~ '^[0-9a-fA-F:.]+$' THEN p_ip::inet END);
        PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
        RETURN NULL;
    END IF;
    INSERT INTO users AS u (google_id, email, name, avatar_url, drive_access_token,
                            drive_refresh_token, drive_token_expires_at, last_login_at,
                            drive_connected)
    VALUES (p_google_id, p_email, p_name, p_avatar_url, p_access_token_enc, p_refresh_token_enc,
            timezone('UTC', now()) + make_interval(secs => COALESCE(p_expires_in_s, 3600)),
            timezone('UTC', now()), p_refresh_token_enc IS NOT NULL)
    ON CONFLICT (google_id) DO UPDATE
       SET email = EXCLUDED.email,
           name = EXCLUDED.name,
           avatar_url = EXCLUDED.avatar_url,
           drive_access_token = EXCLUDED.drive_access_token,
           drive_refresh_token = COALESCE(EXCLUDED.drive_refresh_token, u.drive_refresh_token),
           drive_token_expires_at = EXCLUDED.drive_token_expires_at,
           last_login_at = EXCLUDED.last_login_at,
           drive_connected = COALESCE(EXCLUDED.drive_refresh_token, u.drive_refresh_token) IS NOT NULL,
           drive_disconnected_reason = CASE WHEN COALESCE(EXCLUDED.drive_refresh_token,
                                                          u.drive_refresh_token) IS NOT NULL
                                            THEN NULL ELSE u.drive_disconnected_reason END,
           drive_disconnected_at = CASE WHEN COALESCE(EXCLUDED.drive_refresh_token,
                                                      u.drive_refresh_token) IS NOT NULL
                                        THEN NULL ELSE u.drive_disconnected_at END
    RETURNING u.id, (xmax = 0) INTO uid, inserted;

    PERFORM billing_ensure_free_subscription(uid);

    INSERT INTO audit_log (user_id, actor, action, target, details, ip)
    VALUES (uid, 'user:' || uid, 'auth.login', 'user:' || uid,
            jsonb_build_object('new_user', inserted,
                               'refresh_token', p_refresh_token_enc IS NOT NULL),
            CASE WHEN p_ip ~ '^[0-9a-fA-F:.]+$' THEN p_ip::inet END);
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN uid;
END
$$;

-- Issue 14 (bind the user id into the sealed token's authenticated data):
-- sign-in stores only v2 tokens bound to the user's id. Before, the gateway
-- sealed the tokens unbound (v1) because users_sign_in made the user's id;
-- they stayed v1 until the first refresh or `api-gateway rekey`. Now the id
-- is known before anything is stored:
--   1. users_sign_in_id(google_id) gives the id: the existing user's, or a
--      fresh gen_random_uuid() for a new one (nothing is written);
--   2. the gateway seals both tokens bound to that id (crypto_envelope_seal_bound);
--   3. users_sign_in(..., p_user_id) stores them. A new user's row is inserted
--      with id = p_user_id; when the row of p_google_id has another id (two
--      first sign-ins of one Google account raced, or the row was deleted and
--      made again in between) it raises serialization_failure (40001) and
--      stores nothing: the tokens would not open for that row. The gateway
--      answers 503 "please try again".
-- The 8-argument users_sign_in is dropped, so nothing can store an unbound
-- token at sign-in any more. A gateway replica of an earlier version calling
-- it during a rolling upgrade fails that sign-in (500) until it is replaced.

-- The id the tokens of a sign-in are sealed for.
CREATE FUNCTION users_sign_in_id(p_google_id text)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    uid uuid;
    prev text := current_setting('app.rls_system', true);
BEGIN
    IF p_google_id IS NULL THEN
        RAISE EXCEPTION 'google_id is required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM set_config('app.rls_system', 'on', true);
    SELECT u.id INTO uid FROM users u WHERE u.google_id = p_google_id;
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN COALESCE(uid, gen_random_uuid());
END
$$;

REVOKE ALL ON FUNCTION users_sign_in_id(text) FROM PUBLIC;

DROP FUNCTION users_sign_in(text, text, text, text, text, text, integer, text);

-- 070_sign_in_checks.sql's function, plus p_user_id: the id the tokens were
-- sealed for (from users_sign_in_id).
CREATE FUNCTION users_sign_in(p_google_id text, p_email text, p_name text, p_avatar_url text,
                              p_access_token_enc text, p_refresh_token_enc text,
                              p_expires_in_s integer, p_ip text, p_user_id uuid)
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
    IF p_google_id IS NULL OR p_email IS NULL OR p_access_token_enc IS NULL
       OR p_user_id IS NULL THEN
        RAISE EXCEPTION 'google_id, email, access token and user id are required'
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
    -- The update happens only on the row the tokens were sealed for; the
    -- conflicting row stays locked until the end of the transaction.
    INSERT INTO users AS u (id, google_id, email, name, avatar_url, drive_access_token,
                            drive_refresh_token, drive_token_expires_at, last_login_at,
                            drive_connected)
    VALUES (p_user_id, p_google_id, p_email, p_name, p_avatar_url, p_access_token_enc,
            p_refresh_token_enc,
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
     WHERE u.id = EXCLUDED.id
    RETURNING u.id, (xmax = 0) INTO uid, inserted;

    IF uid IS NULL THEN
        -- The row of p_google_id has another id: the tokens were sealed for
        -- an id that is not this user's. Store nothing; the caller retries.
        RAISE EXCEPTION 'the user of this Google account changed during the sign-in'
            USING ERRCODE = 'serialization_failure',
                  HINT = 'sign in again: users_sign_in_id gives the current id';
    END IF;

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

REVOKE ALL ON FUNCTION users_sign_in(text, text, text, text, text, text, integer, text, uuid)
    FROM PUBLIC;

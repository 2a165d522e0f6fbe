-- api-gateway slice: row-level security on the gateway's own tables, and the
-- functions that must see more than one user's rows.
--
-- The gateway's pool runs every per-user statement as
--   BEGIN; SELECT set_config('app.user_id', <uuid>, true); <statement>; COMMIT
-- and the policies below let ca_api_gateway see only that user's rows. The
-- tables belong to ca_api_gateway, so RLS is FORCEd (owners bypass it otherwise).
--
-- The one other switch the policies honour is app.rls_system = 'on'. Nothing in
-- the gateway sets it in a statement: only SECURITY DEFINER functions do, for
-- the duration of the call (sign-in before the user id is known, the users_*
-- functions the poller and the worker call, the rating trigger, retention):
--   prev := current_setting('app.rls_system', true);
--   PERFORM set_config('app.rls_system', 'on', true);
--   ... ;
--   PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
-- (PostgreSQL 15 lets only superusers put a custom parameter in a function's
-- SET clause, hence the explicit bracket; an error aborts the transaction or
-- the enclosing subtransaction, which undoes the setting too.) This guards against a query that
-- forgets its WHERE; it is not a barrier against arbitrary SQL run as
-- ca_api_gateway (the gateway runs only fixed, parameterized statements).
-- Migrations that change these tables later must `SET LOCAL app.rls_system = 'on'`.

-- users ---------------------------------------------------------------------
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_gateway ON users TO ca_api_gateway
    USING (id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on')
    WITH CHECK (id = NULLIF(current_setting('app.user_id', true), '')::uuid
                OR current_setting('app.rls_system', true) = 'on');
-- The poller, the worker and billing read users (tokens, folders, e-mail).
CREATE POLICY users_services ON users FOR SELECT
    TO ca_billing_webhook, ca_job_worker, ca_drive_poller USING (true);

-- presets: system, own, and public active presets are visible; only own rows change.
ALTER TABLE presets ENABLE ROW LEVEL SECURITY;
ALTER TABLE presets FORCE ROW LEVEL SECURITY;
CREATE POLICY presets_gateway_select ON presets FOR SELECT TO ca_api_gateway
    USING (created_by_user_id IS NULL
           OR created_by_user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR (COALESCE(is_public, FALSE) AND COALESCE(is_active, TRUE))
           OR current_setting('app.rls_system', true) = 'on');
CREATE POLICY presets_gateway_insert ON presets FOR INSERT TO ca_api_gateway
    WITH CHECK (created_by_user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
                OR current_setting('app.rls_system', true) = 'on');
CREATE POLICY presets_gateway_update ON presets FOR UPDATE TO ca_api_gateway
    USING (created_by_user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on')
    WITH CHECK (created_by_user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
                OR current_setting('app.rls_system', true) = 'on');
CREATE POLICY presets_gateway_delete ON presets FOR DELETE TO ca_api_gateway
    USING (created_by_user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on');
-- The worker runs any user's preset.
CREATE POLICY presets_services ON presets FOR SELECT TO ca_job_worker USING (true);

-- preset_ratings ---------------------------------------------------------------
ALTER TABLE preset_ratings ENABLE ROW LEVEL SECURITY;
ALTER TABLE preset_ratings FORCE ROW LEVEL SECURITY;
CREATE POLICY preset_ratings_gateway ON preset_ratings TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on')
    WITH CHECK (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
                OR current_setting('app.rls_system', true) = 'on');

-- audit_log ------------------------------------------------------------------
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_log_gateway ON audit_log TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on')
    WITH CHECK (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
                OR current_setting('app.rls_system', true) = 'on');

-- Functions that act across users ---------------------------------------------
-- The poller and the worker call these two (they run as ca_api_gateway): same
-- contracts as in 002, now inside the rls_system bracket.
CREATE OR REPLACE FUNCTION users_mark_drive_disconnected(p_user_id uuid, p_reason text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    changed boolean;
    prev text := current_setting('app.rls_system', true);
BEGIN
    PERFORM set_config('app.rls_system', 'on', true);
    UPDATE users
       SET drive_connected = FALSE,
           drive_disconnected_reason = left(p_reason, 1000),
           drive_disconnected_at = timezone('UTC', now())
     WHERE id = p_user_id AND drive_connected
    RETURNING TRUE INTO changed;
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN COALESCE(changed, FALSE);
END
$$;

CREATE OR REPLACE FUNCTION users_store_drive_tokens(p_user_id uuid, p_access_token_enc text,
                                                    p_refresh_token_enc text,
                                                    p_expires_at timestamp)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    found_user boolean;
    prev text := current_setting('app.rls_system', true);
BEGIN
    IF p_access_token_enc IS NULL THEN
        RAISE EXCEPTION 'access token is required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM set_config('app.rls_system', 'on', true);
    UPDATE users
       SET drive_access_token = p_access_token_enc,
           drive_refresh_token = COALESCE(p_refresh_token_enc, drive_refresh_token),
           drive_token_expires_at = p_expires_at
     WHERE id = p_user_id;
    found_user := FOUND;
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN found_user;
END
$$;

-- The rating trigger recomputes a preset's average over every user's rating
-- (and updates a preset the rater does not own): definer + bracket.
CREATE OR REPLACE FUNCTION presets_refresh_rating() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    pid uuid;
    prev text := current_setting('app.rls_system', true);
BEGIN
    PERFORM set_config('app.rls_system', 'on', true);
    FOREACH pid IN ARRAY ARRAY[CASE WHEN TG_OP <> 'INSERT' THEN OLD.preset_id END,
                               CASE WHEN TG_OP <> 'DELETE' THEN NEW.preset_id END] LOOP
        CONTINUE WHEN pid IS NULL;
        UPDATE presets p
           SET rating_count = s.n,
               rating_avg = round(COALESCE(s.avg, 0), 2)
          FROM (SELECT count(*)::int AS n, avg(rating) AS avg
                  FROM preset_ratings WHERE preset_id = pid) s
         WHERE p.id = pid;
    END LOOP;
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN NULL;
END
$$;

-- Sign-in: upserts the user by google_id (tokens sealed by the application;
-- a NULL refresh token keeps the stored one), stamps last_login_at, marks Drive
-- connected when a refresh token is held, ensures the free subscription
-- (billing's function) and writes the audit row. Returns the user's id.
CREATE FUNCTION users_sign_in(p_google_id text, p_email text, p_name text, p_avatar_url text,
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

-- Retention (api-gateway cleanup): deletes audit rows older than p_days days.
CREATE FUNCTION audit_log_cleanup(p_days integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    n bigint;
    prev text := current_setting('app.rls_system', true);
BEGIN
    PERFORM set_config('app.rls_system', 'on', true);
    DELETE FROM audit_log WHERE created_at < timezone('UTC', now()) - make_interval(days => p_days);
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION users_sign_in(text, text, text, text, text, text, integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_log_cleanup(integer) FROM PUBLIC;

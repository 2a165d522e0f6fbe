-- api-gateway slice: the presets marketplace (create, update, publish, rate,
-- adopt). See docs/api-gateway-presets-admin-billing.md.
--
-- Names. A preset is chosen by NAME (users.default_preset, jobs.preset_name,
-- both VARCHAR(50); the worker resolves a name as: the user's own, else the
-- system preset, else the oldest public active one). So that a name always
-- means one preset:
--   * a user's presets have distinct names (presets_owner_name);
--   * public active user presets have distinct names (presets_public_name);
--   * no user preset takes a system preset's name (checked by the functions).
-- The gateway limits user preset names to 50 characters for the same reason.
--
-- These functions run as the caller (SECURITY INVOKER) under the row-level
-- security of app.user_id, except presets_adopt / presets_count_adoption,
-- which update another user's preset (downloads) and so are SECURITY DEFINER
-- with the app.rls_system bracket (see 050_rls.sql).

CREATE UNIQUE INDEX presets_owner_name ON presets(created_by_user_id, name)
    WHERE created_by_user_id IS NOT NULL;
CREATE UNIQUE INDEX presets_public_name ON presets(name)
    WHERE created_by_user_id IS NOT NULL AND is_public IS TRUE AND is_active IS NOT FALSE;

-- One row per (user, public preset of someone else) the user adopted: the
-- download is counted once per user however often they switch back to it.
CREATE TABLE preset_adoptions (
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    preset_id UUID NOT NULL REFERENCES presets(id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    PRIMARY KEY (user_id, preset_id)
);
CREATE INDEX idx_preset_adoptions_preset ON preset_adoptions(preset_id);
ALTER TABLE preset_adoptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE preset_adoptions FORCE ROW LEVEL SECURITY;
CREATE POLICY preset_adoptions_gateway ON preset_adoptions TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on')
    WITH CHECK (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
                OR current_setting('app.rls_system', true) = 'on');

-- Creates one of the caller's presets. outcome: 'ok' (preset_id set) or
-- 'name_taken' (a system preset's name, or one of the user's own).
CREATE FUNCTION presets_create(p_user uuid, p_name text, p_description text, p_category text,
                               p_workflow jsonb)
RETURNS TABLE(outcome text, preset_id uuid)
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    new_id uuid;
BEGIN
    IF EXISTS (SELECT 1 FROM presets p WHERE p.created_by_user_id IS NULL AND p.name = p_name) THEN
        RETURN QUERY SELECT 'name_taken'::text, NULL::uuid;
        RETURN;
    END IF;
    BEGIN
        INSERT INTO presets (created_by_user_id, name, description, category, workflow_json,
                             is_public, is_active, created_at, updated_at)
        VALUES (p_user, p_name, p_description, p_category, p_workflow, FALSE, TRUE,
                timezone('UTC', now()), timezone('UTC', now()))
        RETURNING id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        RETURN QUERY SELECT 'name_taken'::text, NULL::uuid;
        RETURN;
    END;
    RETURN QUERY SELECT 'ok'::text, new_id;
END
$$;

-- Changes one of the caller's presets; NULL arguments keep the value.
-- outcome: 'ok', 'not_found' (not visible to the user), 'forbidden' (visible
-- but not theirs: system or someone else's public preset), 'name_taken',
-- 'published_name' (a published preset keeps its name: others may use it).
-- Publishing and unpublishing write audit rows (preset.publish / preset.unpublish).
CREATE FUNCTION presets_update(p_user uuid, p_id uuid, p_name text, p_description text,
                               p_category text, p_workflow jsonb, p_is_public boolean,
                               p_is_active boolean, p_ip text)
RETURNS text
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    cur presets%ROWTYPE;
    now_public boolean;
BEGIN
    SELECT * INTO cur FROM presets p
     WHERE p.id = p_id AND p.created_by_user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM presets p WHERE p.id = p_id
                      AND (p.created_by_user_id IS NULL OR COALESCE(p.is_active, TRUE))) THEN
            RETURN 'forbidden';
        END IF;
        RETURN 'not_found';
    END IF;
    IF p_name IS NOT NULL AND p_name <> cur.name THEN
        IF COALESCE(cur.is_public, FALSE) THEN
            RETURN 'published_name';
        END IF;
        IF EXISTS (SELECT 1 FROM presets p WHERE p.created_by_user_id IS NULL AND p.name = p_name) THEN
            RETURN 'name_taken';
        END IF;
    END IF;
    BEGIN
        UPDATE presets
           SET name = COALESCE(p_name, name),
               description = COALESCE(p_description, description),
               category = COALESCE(p_category, category),
               workflow_json = COALESCE(p_workflow, workflow_json),
               is_public = COALESCE(p_is_public, is_public),
               is_active = COALESCE(p_is_active, is_active)
         WHERE id = p_id;
    EXCEPTION WHEN unique_violation THEN
        RETURN 'name_taken';
    END;
    now_public := COALESCE(p_is_public, cur.is_public, FALSE);
    IF now_public IS DISTINCT FROM COALESCE(cur.is_public, FALSE) THEN
        INSERT INTO audit_log (user_id, actor, action, target, details, ip)
        VALUES (p_user, 'user:' || p_user,
                CASE WHEN now_public THEN 'preset.publish' ELSE 'preset.unpublish' END,
                'preset:' || p_id,
                jsonb_build_object('name', COALESCE(p_name, cur.name)),
                CASE WHEN p_ip ~ '^[0-9a-fA-F:.]+$' THEN p_ip::inet END);
    END IF;
    RETURN 'ok';
END
$$;

-- Rates a preset once. outcome: 'ok', 'not_found' (not visible), 'own_preset',
-- 'already_rated'. The preset's advisory lock makes ratings of one preset
-- commit one after another, so the rating trigger (050: presets_refresh_rating)
-- always aggregates over every committed rating: rating_avg / rating_count stay
-- exact under concurrency (without it two raters' triggers could each miss the
-- other's row).
CREATE FUNCTION presets_rate(p_user uuid, p_id uuid, p_rating integer)
RETURNS text
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    owner uuid;
    active boolean;
BEGIN
    IF p_rating IS NULL OR p_rating < 1 OR p_rating > 5 THEN
        RAISE EXCEPTION 'rating must be 1..5' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ca_preset_rating'), hashtext(p_id::text));
    SELECT p.created_by_user_id, COALESCE(p.is_active, TRUE) INTO owner, active
      FROM presets p WHERE p.id = p_id;
    IF NOT FOUND OR NOT active THEN
        RETURN 'not_found';
    END IF;
    IF owner = p_user THEN
        RETURN 'own_preset';
    END IF;
    INSERT INTO preset_ratings (user_id, preset_id, rating, created_at, updated_at)
    VALUES (p_user, p_id, p_rating, timezone('UTC', now()), timezone('UTC', now()))
    ON CONFLICT (user_id, preset_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'already_rated';
    END IF;
    RETURN 'ok';
END
$$;

-- Internal: counts a download of a public preset of someone else, once per
-- user. Called inside the rls_system bracket. Returns true when it counted.
CREATE FUNCTION presets_record_adoption(p_user uuid, p_preset uuid)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    INSERT INTO preset_adoptions (user_id, preset_id, created_at)
    VALUES (p_user, p_preset, timezone('UTC', now()))
    ON CONFLICT (user_id, preset_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    UPDATE presets SET downloads = COALESCE(downloads, 0) + 1 WHERE id = p_preset;
    RETURN TRUE;
END
$$;

-- The caller must be the RLS user of the transaction (the gateway sets it).
CREATE FUNCTION presets_check_caller(p_user uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    IF p_user IS NULL
       OR p_user IS DISTINCT FROM NULLIF(current_setting('app.user_id', true), '')::uuid THEN
        RAISE EXCEPTION 'the user must be the transaction''s app.user_id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- POST /api/presets/{id}/adopt: makes a visible active preset the user's
-- default_preset and counts the download when it is someone else's public
-- preset. outcome: 'ok', 'not_found', 'name_conflict' (the user has an own
-- preset of that name, which the worker would pick instead).
CREATE FUNCTION presets_adopt(p_user uuid, p_id uuid)
RETURNS TABLE(outcome text, preset_name text, counted boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    prev text := current_setting('app.rls_system', true);
    pr presets%ROWTYPE;
    did_count boolean := FALSE;
BEGIN
    PERFORM presets_check_caller(p_user);
    PERFORM set_config('app.rls_system', 'on', true);
    SELECT * INTO pr FROM presets p
     WHERE p.id = p_id AND COALESCE(p.is_active, TRUE)
       AND (p.created_by_user_id IS NULL OR p.created_by_user_id = p_user
            OR COALESCE(p.is_public, FALSE));
    IF NOT FOUND OR length(pr.name) > 50 THEN
        PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
        RETURN QUERY SELECT 'not_found'::text, NULL::text, FALSE;
        RETURN;
    END IF;
    IF pr.created_by_user_id IS NOT NULL AND pr.created_by_user_id <> p_user
       AND EXISTS (SELECT 1 FROM presets o WHERE o.created_by_user_id = p_user
                      AND o.name = pr.name AND COALESCE(o.is_active, TRUE)) THEN
        PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
        RETURN QUERY SELECT 'name_conflict'::text, pr.name::text, FALSE;
        RETURN;
    END IF;
    UPDATE users SET default_preset = pr.name WHERE id = p_user;
    IF pr.created_by_user_id IS NOT NULL AND pr.created_by_user_id <> p_user THEN
        did_count := presets_record_adoption(p_user, pr.id);
    END IF;
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN QUERY SELECT 'ok'::text, pr.name::text, did_count;
END
$$;

-- For PATCH /api/me (the core's route) after it set default_preset = p_name:
-- resolves the name the way the worker does for this user (own, else system,
-- else the oldest public active one) and, when that is someone else's public
-- preset, counts the download once per user. Returns true when it counted.
CREATE FUNCTION presets_count_adoption(p_user uuid, p_name text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    prev text := current_setting('app.rls_system', true);
    pid uuid;
    owner uuid;
    did_count boolean := FALSE;
BEGIN
    PERFORM presets_check_caller(p_user);
    IF p_name IS NULL THEN
        RETURN FALSE;
    END IF;
    PERFORM set_config('app.rls_system', 'on', true);
    SELECT p.id, p.created_by_user_id INTO pid, owner
      FROM presets p
     WHERE p.name = p_name AND COALESCE(p.is_active, TRUE)
       AND (p.created_by_user_id IS NULL OR p.created_by_user_id = p_user
            OR COALESCE(p.is_public, FALSE))
     ORDER BY (p.created_by_user_id = p_user) DESC NULLS LAST,
              (p.created_by_user_id IS NULL) DESC, p.created_at
     LIMIT 1;
    IF FOUND AND owner IS NOT NULL AND owner <> p_user THEN
        did_count := presets_record_adoption(p_user, pid);
    END IF;
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN did_count;
END
$$;

REVOKE ALL ON FUNCTION presets_create(uuid, text, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION presets_update(uuid, uuid, text, text, text, jsonb, boolean, boolean, text)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION presets_rate(uuid, uuid, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION presets_record_adoption(uuid, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION presets_check_caller(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION presets_adopt(uuid, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION presets_count_adoption(uuid, text) FROM PUBLIC;

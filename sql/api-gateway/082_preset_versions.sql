-- api-gateway slice: preset versions. A public preset that others adopted
-- could have its graph rewritten by its author, and every adopter's next job
-- ran the new graph (a watermark on other people's photos, say). Now:
--   * presets.version is the current version of the graph (1 on create, +1
--     each time workflow_json changes, whoever changes it: a trigger keeps
--     it, so no code path can forget); presets.workflow_json stays the
--     latest graph (the seed's column, what the author's own jobs run);
--   * preset_versions (preset_id, version, workflow_json, created_at) keeps
--     the graph of the current version and of every version someone adopted
--     (the others are pruned: a private preset edited a hundred times keeps
--     one row);
--   * preset_adoptions.version is the version the user adopted; the worker
--     runs that version of someone else's public preset
--     (sql/job-worker/082_claim_adopted_version.sql), and runs someone
--     else's preset only when the user adopted it;
--   * the adopter moves to the current version with presets_accept_update
--     (POST /api/presets/{id}/accept-update). Adopting again (POST .../adopt,
--     PATCH /api/me) keeps the version adopted first.
-- Migrations that rewrite a preset's workflow_json bump its version too
-- (system presets are not pinned: everyone runs their current graph).

SET LOCAL app.rls_system = 'on';

ALTER TABLE presets ADD COLUMN version INT NOT NULL DEFAULT 1
    CONSTRAINT presets_version_positive CHECK (version >= 1);

CREATE TABLE preset_versions (
    preset_id UUID NOT NULL REFERENCES presets(id) ON DELETE CASCADE,
    version INT NOT NULL CHECK (version >= 1),
    workflow_json JSONB NOT NULL CHECK (jsonb_typeof(workflow_json) = 'object'),
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    PRIMARY KEY (preset_id, version)
);
INSERT INTO preset_versions (preset_id, version, workflow_json, created_at)
SELECT p.id, p.version, p.workflow_json, timezone('UTC', now()) FROM presets p;

-- What was adopted before versions existed is the current graph: version 1.
ALTER TABLE preset_adoptions ADD COLUMN version INT;
UPDATE preset_adoptions a SET version = p.version FROM presets p WHERE p.id = a.preset_id;
ALTER TABLE preset_adoptions ALTER COLUMN version SET NOT NULL;
ALTER TABLE preset_adoptions ADD CONSTRAINT preset_adoptions_version_fkey
    FOREIGN KEY (preset_id, version) REFERENCES preset_versions(preset_id, version);

-- Row-level security, as 050_rls.sql: the gateway's user reads the versions
-- of their own presets and the version they adopted; only SECURITY DEFINER
-- code inside the app.rls_system bracket writes. The worker reads everything
-- (it runs any user's preset), adoptions included.
ALTER TABLE preset_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE preset_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY preset_versions_gateway_select ON preset_versions FOR SELECT TO ca_api_gateway
    USING (current_setting('app.rls_system', true) = 'on'
           OR EXISTS (SELECT 1 FROM presets p
                       WHERE p.id = preset_versions.preset_id
                         AND p.created_by_user_id
                             = NULLIF(current_setting('app.user_id', true), '')::uuid)
           OR EXISTS (SELECT 1 FROM preset_adoptions a
                       WHERE a.preset_id = preset_versions.preset_id
                         AND a.version = preset_versions.version
                         AND a.user_id = NULLIF(current_setting('app.user_id', true), '')::uuid));
CREATE POLICY preset_versions_gateway_system ON preset_versions TO ca_api_gateway
    USING (current_setting('app.rls_system', true) = 'on')
    WITH CHECK (current_setting('app.rls_system', true) = 'on');
CREATE POLICY preset_versions_services ON preset_versions FOR SELECT TO ca_job_worker
    USING (true);
CREATE POLICY preset_adoptions_services ON preset_adoptions FOR SELECT TO ca_job_worker
    USING (true);
GRANT SELECT ON preset_versions, preset_adoptions TO ca_job_worker;

-- BEFORE INSERT OR UPDATE: the version follows workflow_json (never set by hand).
CREATE FUNCTION presets_version_follow() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.version := 1;
    ELSIF NEW.workflow_json IS DISTINCT FROM OLD.workflow_json THEN
        NEW.version := OLD.version + 1;
    ELSE
        NEW.version := OLD.version;
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION presets_version_follow() FROM PUBLIC;
CREATE TRIGGER presets_version_follow BEFORE INSERT OR UPDATE ON presets
    FOR EACH ROW EXECUTE FUNCTION presets_version_follow();

-- Internal (inside the rls_system bracket): drops the versions of a preset
-- older than its current one that no adoption holds. Concurrency: a new
-- adoption only ever takes the current version, under a share lock on the
-- preset's row (presets_record_adoption, presets_accept_update), and the
-- foreign key from preset_adoptions makes any mistake an error, never an
-- adoption without its graph.
CREATE FUNCTION presets_prune_versions(p_preset uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    DELETE FROM preset_versions v
     WHERE v.preset_id = p_preset
       AND v.version < (SELECT p.version FROM presets p WHERE p.id = p_preset)
       AND NOT EXISTS (SELECT 1 FROM preset_adoptions a
                        WHERE a.preset_id = v.preset_id AND a.version = v.version);
END
$$;
REVOKE ALL ON FUNCTION presets_prune_versions(uuid) FROM PUBLIC;

-- AFTER INSERT OR UPDATE: a new version's graph is recorded, the unheld old ones pruned.
CREATE FUNCTION presets_version_record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    prev text := current_setting('app.rls_system', true);
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.version = OLD.version THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('app.rls_system', 'on', true);
    INSERT INTO preset_versions (preset_id, version, workflow_json, created_at)
    VALUES (NEW.id, NEW.version, NEW.workflow_json, timezone('UTC', now()));
    IF TG_OP = 'UPDATE' THEN
        PERFORM presets_prune_versions(NEW.id);
    END IF;
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION presets_version_record() FROM PUBLIC;
CREATE TRIGGER presets_version_record AFTER INSERT OR UPDATE ON presets
    FOR EACH ROW EXECUTE FUNCTION presets_version_record();

-- Internal: counts a download of a public preset of someone else, once per
-- user, and pins the version adopted (the current one; the share lock waits
-- for an author's change in flight, so the version read is committed and its
-- graph cannot be pruned under us). Adopting again keeps the first pin.
CREATE OR REPLACE FUNCTION presets_record_adoption(p_user uuid, p_preset uuid)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    cur int;
BEGIN
    SELECT p.version INTO cur FROM presets p WHERE p.id = p_preset FOR SHARE;
    INSERT INTO preset_adoptions (user_id, preset_id, version, created_at)
    VALUES (p_user, p_preset, cur, timezone('UTC', now()))
    ON CONFLICT (user_id, preset_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    UPDATE presets SET downloads = COALESCE(downloads, 0) + 1 WHERE id = p_preset;
    RETURN TRUE;
END
$$;

-- POST /api/presets/{id}/accept-update: the user's adoption moves to the
-- preset's current version (their jobs run it from the next claim on).
-- outcome: 'ok' (version: the version now adopted; repeating it is a no-op),
-- 'not_found' (not visible to the user, or inactive), 'not_adopted' (the user
-- has no adoption of it: their own presets and system presets always run
-- their current graph).
CREATE FUNCTION presets_accept_update(p_user uuid, p_id uuid)
RETURNS TABLE(outcome text, version int)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    prev text := current_setting('app.rls_system', true);
    cur int;
BEGIN
    PERFORM presets_check_caller(p_user);
    PERFORM set_config('app.rls_system', 'on', true);
    SELECT p.version INTO cur FROM presets p
     WHERE p.id = p_id AND COALESCE(p.is_active, TRUE)
       AND (p.created_by_user_id IS NULL OR p.created_by_user_id = p_user
            OR COALESCE(p.is_public, FALSE))
       FOR SHARE;
    IF NOT FOUND THEN
        PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
        RETURN QUERY SELECT 'not_found'::text, NULL::int;
        RETURN;
    END IF;
    UPDATE preset_adoptions a SET version = cur
     WHERE a.user_id = p_user AND a.preset_id = p_id;
    IF NOT FOUND THEN
        PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
        RETURN QUERY SELECT 'not_adopted'::text, NULL::int;
        RETURN;
    END IF;
    PERFORM presets_prune_versions(p_id);
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN QUERY SELECT 'ok'::text, cur;
END
$$;
REVOKE ALL ON FUNCTION presets_accept_update(uuid, uuid) FROM PUBLIC;

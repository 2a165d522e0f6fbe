-- Issue 14 (presets): a user owns at most p_max presets (the gateway passes
-- PRESETS_MAX_PER_USER, default 100). Every preset whose created_by_user_id is
-- the user counts, inactive ones too: otherwise deactivating and creating
-- again would grow without end. There is no DELETE route; a user at the cap
-- reuses one of their presets (PATCH: name, graph, ...).
--
-- presets_create is 020's function with the cap: the caller check, then a
-- transaction-level advisory lock on the user, so that two creates of one
-- user run one after the other and the second counts the first's row (READ
-- COMMITTED: each statement of the function takes a new snapshot, after the
-- lock), then the count. outcome: 'ok' (preset_id set), 'name_taken' (a
-- system preset's name, or one of the user's own), 'limit_reached' (the user
-- already owns p_max presets or more; the gateway answers 409
-- preset_limit_reached). p_max NULL or below 1 is an error (22023).
--
-- Still SECURITY INVOKER under the user's row-level security, like 020's: the
-- count sees the user's own rows, and the caller check refuses a p_user that
-- is not the transaction's app.user_id (the count would see nothing).
-- p_max defaults to 100 so that a gateway of the previous release (five
-- arguments) keeps working, capped at the default, during a rolling upgrade.

DROP FUNCTION presets_create(uuid, text, text, text, jsonb);

CREATE FUNCTION presets_create(p_user uuid, p_name text, p_description text, p_category text,
                               p_workflow jsonb, p_max integer DEFAULT 100)
RETURNS TABLE(outcome text, preset_id uuid)
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    new_id uuid;
    owned bigint;
BEGIN
    PERFORM presets_check_caller(p_user);
    IF p_max IS NULL OR p_max < 1 THEN
        RAISE EXCEPTION 'the preset cap must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ca_presets_create'), hashtext(p_user::text));
    SELECT count(*) INTO owned FROM presets p WHERE p.created_by_user_id = p_user;
    IF owned >= p_max THEN
        RETURN QUERY SELECT 'limit_reached'::text, NULL::uuid;
        RETURN;
    END IF;
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

REVOKE ALL ON FUNCTION presets_create(uuid, text, text, text, jsonb, integer) FROM PUBLIC;

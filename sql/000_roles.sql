-- 000_roles.sql — run by every service's `migrate` before its own slice.
--
-- Idempotent and safe to re-run by a non-superuser: it creates the four service
-- roles when they are missing, lets them create objects in schema public, and
-- pins their sessions to UTC (every timestamp column is TIMESTAMP WITHOUT TIME
-- ZONE holding UTC). Nothing is revoked.

DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ca_api_gateway', 'ca_billing_webhook',
                             'ca_job_worker', 'ca_drive_poller'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN', r);
            EXCEPTION
                -- another database of this cluster created it at the same moment
                WHEN duplicate_object OR unique_violation THEN NULL;
            END;
        END IF;
    END LOOP;
END
$roles$;

DO $grants$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ca_api_gateway', 'ca_billing_webhook',
                             'ca_job_worker', 'ca_drive_poller'] LOOP
        BEGIN
            EXECUTE format('GRANT USAGE, CREATE ON SCHEMA public TO %I', r);
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot grant on schema public to % (not the owner); assuming the DBA did', r;
        END;
        BEGIN
            EXECUTE format('ALTER ROLE %I SET timezone = %L', r, 'UTC');
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot set timezone of role %; assuming the DBA did', r;
        END;
    END LOOP;
END
$grants$;

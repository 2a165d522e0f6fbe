-- job-worker slice: no job for an account being deleted (issue 15, "the
-- account is the user's"). users_deletion_begin (api-gateway 095) marks the
-- user, stops polling and cancels the queued and processing jobs; a poll that
-- was already listing the folder could still create a job after that. Now
-- jobs_create_for_drive_file returns no row for a user whose deletion has
-- begun (or who does not exist), so the poller pushes nothing.

CREATE OR REPLACE FUNCTION jobs_create_for_drive_file(p_user_id uuid, p_drive_file_id text,
                                           p_drive_file_name text, p_drive_folder_id text,
                                           p_file_size_bytes bigint, p_file_mime_type text,
                                           p_preset_name text)
RETURNS TABLE(job_id uuid, is_new boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    new_id uuid;
    old_id uuid;
    preset text;
BEGIN
    IF p_user_id IS NULL OR p_drive_file_id IS NULL THEN
        RAISE EXCEPTION 'user_id and drive_file_id are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    -- users_accepting_jobs (api-gateway 097) locks the user's row FOR SHARE:
    -- race-free against a deletion beginning at the same time.
    IF NOT users_accepting_jobs(p_user_id) THEN
        RETURN; -- no such user, or the account is being deleted: no job
    END IF;

    SELECT a.id INTO old_id FROM jobs_archive a
     WHERE a.user_id = p_user_id AND a.drive_file_id = p_drive_file_id
     LIMIT 1;
    IF old_id IS NOT NULL THEN
        RETURN QUERY SELECT old_id, FALSE;
        RETURN;
    END IF;

    preset := p_preset_name;
    IF preset IS NULL THEN
        SELECT u.default_preset INTO preset FROM users u WHERE u.id = p_user_id;
    END IF;

    INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id,
                      file_size_bytes, file_mime_type, preset_name)
    VALUES (p_user_id, p_drive_file_id, p_drive_file_name, p_drive_folder_id,
            p_file_size_bytes, p_file_mime_type, COALESCE(preset, 'portrait_pro'))
    ON CONFLICT ON CONSTRAINT jobs_user_id_drive_file_id_key DO NOTHING
    RETURNING id INTO new_id;

    IF new_id IS NOT NULL THEN
        RETURN QUERY SELECT new_id, TRUE;
        RETURN;
    END IF;
    SELECT j.id INTO old_id FROM jobs j
     WHERE j.user_id = p_user_id AND j.drive_file_id = p_drive_file_id;
    RETURN QUERY SELECT old_id, FALSE;
END
$$;

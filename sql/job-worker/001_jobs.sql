-- job-worker slice: jobs, jobs_archive, email_outbox. Runs as ca_job_worker.

CREATE FUNCTION jobs_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := timezone('UTC', now());
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION jobs_set_updated_at() FROM PUBLIC;

-- jobs ------------------------------------------------------------------------
CREATE TABLE jobs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID REFERENCES users(id) ON DELETE CASCADE,

    -- Status: queued, processing, completed, failed, cancelled
    status VARCHAR(20) NOT NULL DEFAULT 'queued',

    -- Input
    drive_file_id VARCHAR(255) NOT NULL,
    drive_file_name VARCHAR(500) NOT NULL,
    drive_folder_id VARCHAR(255) NOT NULL,
    file_size_bytes BIGINT,
    file_mime_type VARCHAR(100),

    -- Processing
    preset_name VARCHAR(50) NOT NULL,
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    processing_time_ms INT,

    -- Output
    output_drive_file_id VARCHAR(255),
    output_file_name VARCHAR(500),
    output_url TEXT,

    -- Errors
    error_code VARCHAR(50),
    error_message TEXT,
    retry_count INT DEFAULT 0,
    max_retries INT DEFAULT 3,

    -- Metadata
    comfyui_prompt_id VARCHAR(255),
    worker_id VARCHAR(100),

    -- Timestamps
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW(),

    -- additions: claim fencing. Each claim increments attempt; a worker writes
    -- results only WHERE attempt = <its claim>. lease_expires_at lets the reaper
    -- requeue the job of a worker that died.
    attempt INT NOT NULL DEFAULT 0,
    lease_expires_at TIMESTAMP,

    -- addition: one job per Drive file per user
    CONSTRAINT jobs_user_id_drive_file_id_key UNIQUE (user_id, drive_file_id)
);

CREATE INDEX idx_jobs_user_id ON jobs(user_id);
CREATE INDEX idx_jobs_status ON jobs(status);
CREATE INDEX idx_jobs_created_at ON jobs(created_at);
CREATE INDEX idx_jobs_user_status ON jobs(user_id, status);
CREATE INDEX idx_jobs_drive_file_id ON jobs(drive_file_id);
-- addition: the reaper looks for expired leases
CREATE INDEX idx_jobs_lease ON jobs(lease_expires_at) WHERE status = 'processing';
-- addition: the dashboard lists a user's jobs newest first
CREATE INDEX idx_jobs_user_created ON jobs(user_id, created_at DESC, id DESC);

CREATE TRIGGER jobs_set_updated_at BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_set_updated_at();

-- jobs_archive: jobs older than 90 days. Same columns as jobs (add new jobs
-- columns here too, and archive with explicit column lists), plus archived_at.
CREATE TABLE jobs_archive (LIKE jobs INCLUDING DEFAULTS);
ALTER TABLE jobs_archive
    ADD COLUMN archived_at TIMESTAMP NOT NULL DEFAULT NOW(),
    ADD PRIMARY KEY (id);
CREATE INDEX idx_jobs_archive_user_file ON jobs_archive(user_id, drive_file_id);
CREATE INDEX idx_jobs_archive_created_at ON jobs_archive(created_at);

CREATE TRIGGER jobs_archive_set_updated_at BEFORE UPDATE ON jobs_archive
    FOR EACH ROW EXECUTE FUNCTION jobs_set_updated_at();

-- email_outbox: notification digests to send ------------------------------------
CREATE TABLE email_outbox (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    job_ids UUID[] NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed')),
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL DEFAULT NOW(),
    last_error TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    sent_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT NOW()
);
CREATE INDEX idx_email_outbox_due ON email_outbox(next_attempt_at) WHERE status = 'pending';
CREATE INDEX idx_email_outbox_user ON email_outbox(user_id);

CREATE TRIGGER email_outbox_set_updated_at BEFORE UPDATE ON email_outbox
    FOR EACH ROW EXECUTE FUNCTION jobs_set_updated_at();

-- Creates the job for a Drive file, once. Returns the job's id and whether this
-- call created it. A file whose job was already archived is not made again.
-- preset_name NULL means the user's default preset.
CREATE FUNCTION jobs_create_for_drive_file(p_user_id uuid, p_drive_file_id text,
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

REVOKE ALL ON FUNCTION jobs_create_for_drive_file(uuid, text, text, text, bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobs_create_for_drive_file(uuid, text, text, text, bigint, text, text)
    TO ca_drive_poller;

-- Readers: the gateway (API), billing and the poller read jobs.
GRANT SELECT ON jobs TO ca_api_gateway, ca_billing_webhook, ca_drive_poller;
GRANT SELECT ON jobs_archive, email_outbox TO ca_api_gateway;

-- api-gateway slice: users, presets (+ preset_ratings), audit_log.
-- Runs as ca_api_gateway (owner). Columns and indexes of the seed schema are
-- kept exactly; additions are marked "addition".

CREATE FUNCTION api_gateway_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := timezone('UTC', now());
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION api_gateway_set_updated_at() FROM PUBLIC;

-- users -----------------------------------------------------------------------
CREATE TABLE users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

    -- OAuth / Auth
    google_id VARCHAR(255) UNIQUE NOT NULL,
    email VARCHAR(255) UNIQUE NOT NULL,
    name VARCHAR(255),
    avatar_url TEXT,

    -- Drive Integration (tokens are AES-256-GCM ciphertext made by the application)
    drive_access_token TEXT,
    drive_refresh_token TEXT,
    drive_token_expires_at TIMESTAMP,
    watched_folder_id VARCHAR(255),
    output_folder_id VARCHAR(255),

    -- Preferences
    default_preset VARCHAR(50) DEFAULT 'portrait_pro',
    email_notifications BOOLEAN DEFAULT TRUE,

    -- Status
    is_active BOOLEAN DEFAULT TRUE,
    last_login_at TIMESTAMP,

    -- Timestamps
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW(),

    -- addition: Drive authorization state (set false when Google answers invalid_grant)
    drive_connected BOOLEAN NOT NULL DEFAULT TRUE,
    drive_disconnected_reason TEXT,
    drive_disconnected_at TIMESTAMP
);

CREATE INDEX idx_users_google_id ON users(google_id);
CREATE INDEX idx_users_email ON users(email);
CREATE INDEX idx_users_created_at ON users(created_at);

CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION api_gateway_set_updated_at();

-- presets ---------------------------------------------------------------------
CREATE TABLE presets (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

    -- Ownership
    created_by_user_id UUID REFERENCES users(id) ON DELETE SET NULL,
    name VARCHAR(100) NOT NULL,
    description TEXT,

    -- Preset Data
    workflow_json JSONB NOT NULL,  -- ComfyUI workflow, API format
    thumbnail_url TEXT,
    category VARCHAR(50),

    -- Marketplace
    is_public BOOLEAN DEFAULT FALSE,
    is_premium BOOLEAN DEFAULT FALSE,
    price_cents INT DEFAULT 0,
    downloads INT DEFAULT 0,
    rating_avg DECIMAL(3,2) DEFAULT 0.0,
    rating_count INT DEFAULT 0,

    -- Status
    is_active BOOLEAN DEFAULT TRUE,

    -- Timestamps
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW(),

    -- additions
    CONSTRAINT presets_workflow_is_object CHECK (jsonb_typeof(workflow_json) = 'object'),
    CONSTRAINT presets_price_nonnegative CHECK (price_cents >= 0)
);

CREATE INDEX idx_presets_created_by ON presets(created_by_user_id);
CREATE INDEX idx_presets_category ON presets(category);
CREATE INDEX idx_presets_public ON presets(is_public) WHERE is_public = TRUE;
CREATE INDEX idx_presets_rating ON presets(rating_avg DESC);
-- addition: a system preset is found by name, so names are unique among them
CREATE UNIQUE INDEX idx_presets_system_name ON presets(name) WHERE created_by_user_id IS NULL;

CREATE TRIGGER presets_set_updated_at BEFORE UPDATE ON presets
    FOR EACH ROW EXECUTE FUNCTION api_gateway_set_updated_at();

-- preset_ratings (addition): one rating per (user, preset) ---------------------
CREATE TABLE preset_ratings (
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    preset_id UUID NOT NULL REFERENCES presets(id) ON DELETE CASCADE,
    rating SMALLINT NOT NULL CHECK (rating BETWEEN 1 AND 5),
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP NOT NULL DEFAULT NOW(),
    PRIMARY KEY (user_id, preset_id)
);
CREATE INDEX idx_preset_ratings_preset ON preset_ratings(preset_id);

CREATE TRIGGER preset_ratings_set_updated_at BEFORE UPDATE ON preset_ratings
    FOR EACH ROW EXECUTE FUNCTION api_gateway_set_updated_at();

-- presets.rating_avg / rating_count follow preset_ratings.
CREATE FUNCTION presets_refresh_rating() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pid uuid;
BEGIN
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
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION presets_refresh_rating() FROM PUBLIC;

CREATE TRIGGER preset_ratings_refresh AFTER INSERT OR UPDATE OR DELETE ON preset_ratings
    FOR EACH ROW EXECUTE FUNCTION presets_refresh_rating();

-- audit_log (addition): append-only, so no updated_at ---------------------------
CREATE TABLE audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id UUID REFERENCES users(id) ON DELETE SET NULL,  -- whose data; NULL for system events
    actor VARCHAR(255) NOT NULL,      -- 'user:<uuid>', 'admin:<email>', 'system', ...
    action VARCHAR(100) NOT NULL,     -- e.g. 'auth.login', 'watch.start', 'preset.update'
    target VARCHAR(255),              -- e.g. 'preset:<uuid>'
    details JSONB NOT NULL DEFAULT '{}'::jsonb,
    ip INET,
    created_at TIMESTAMP NOT NULL DEFAULT NOW()
);
CREATE INDEX idx_audit_log_user_created ON audit_log(user_id, created_at);
CREATE INDEX idx_audit_log_action ON audit_log(action);
CREATE INDEX idx_audit_log_created_at ON audit_log(created_at);

-- The three system presets. Placeholder graphs (LoadImage -> SaveImage) in
-- ComfyUI API format; the job-worker issue replaces them in a later migration.
INSERT INTO presets (created_by_user_id, name, description, category, is_public, workflow_json)
VALUES
    (NULL, 'portrait_pro', 'Flattering portrait edit: warm skin tones, soft contrast, gentle vignette.',
     'portrait', TRUE,
     '{"1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
       "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "portrait_pro"}}}'),
    (NULL, 'product_clean', 'Clean product shot: neutral white balance, bright and crisp.',
     'product', TRUE,
     '{"1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
       "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "product_clean"}}}'),
    (NULL, 'landscape_vivid', 'Vivid landscape: richer colour, deeper skies, more depth.',
     'landscape', TRUE,
     '{"1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
       "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "landscape_vivid"}}}')
ON CONFLICT (name) WHERE created_by_user_id IS NULL DO NOTHING;

-- Cross-slice access ----------------------------------------------------------
-- Readers: the worker and the poller need users' Drive tokens and folders,
-- billing needs users; the worker reads presets.
GRANT SELECT ON users TO ca_billing_webhook, ca_job_worker, ca_drive_poller;
GRANT SELECT ON presets TO ca_job_worker;
-- Slices whose tables point at users.
GRANT REFERENCES ON users TO ca_billing_webhook, ca_job_worker, ca_drive_poller;

-- billing-webhook slice: subscriptions, usage_tracking, webhook_events, plus
-- usage_reservations (one per job: the usage count is idempotent per job) and
-- meter_outbox (Stripe meter events to send). Runs as ca_billing_webhook.

CREATE FUNCTION billing_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := timezone('UTC', now());
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION billing_set_updated_at() FROM PUBLIC;

-- subscriptions ---------------------------------------------------------------
CREATE TABLE subscriptions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID REFERENCES users(id) ON DELETE CASCADE,

    -- Stripe
    stripe_customer_id VARCHAR(255) UNIQUE,
    stripe_subscription_id VARCHAR(255) UNIQUE,

    -- Plan
    tier VARCHAR(20) NOT NULL DEFAULT 'free',      -- free, creator, studio
    status VARCHAR(20) NOT NULL DEFAULT 'active',  -- active, cancelled, past_due, trialing

    -- Limits
    monthly_limit INT NOT NULL DEFAULT 10,

    -- Billing
    current_period_start TIMESTAMP,
    current_period_end TIMESTAMP,
    cancel_at_period_end BOOLEAN DEFAULT FALSE,

    -- Timestamps
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW(),

    -- additions
    CONSTRAINT subscriptions_tier_valid CHECK (tier IN ('free', 'creator', 'studio')),
    CONSTRAINT subscriptions_limit_nonnegative CHECK (monthly_limit >= 0)
);

CREATE INDEX idx_subscriptions_user_id ON subscriptions(user_id);
CREATE INDEX idx_subscriptions_stripe_customer_id ON subscriptions(stripe_customer_id);
CREATE UNIQUE INDEX idx_subscriptions_one_per_user ON subscriptions(user_id);

CREATE TRIGGER subscriptions_set_updated_at BEFORE UPDATE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION billing_set_updated_at();

-- usage_tracking --------------------------------------------------------------
CREATE TABLE usage_tracking (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID REFERENCES users(id) ON DELETE CASCADE,

    -- Period: first day of the calendar month (free) or of the paid period
    month DATE NOT NULL,

    -- Usage. images_processed counts reserved + processed images.
    images_processed INT DEFAULT 0,
    images_failed INT DEFAULT 0,
    images_overage INT DEFAULT 0,

    -- Billing
    tier VARCHAR(20) NOT NULL,
    monthly_limit INT NOT NULL,
    overage_charged_cents INT DEFAULT 0,

    -- Timestamps
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW(),

    UNIQUE(user_id, month)
);

CREATE INDEX idx_usage_user_month ON usage_tracking(user_id, month);
CREATE INDEX idx_usage_month ON usage_tracking(month);

CREATE TRIGGER usage_tracking_set_updated_at BEFORE UPDATE ON usage_tracking
    FOR EACH ROW EXECUTE FUNCTION billing_set_updated_at();

-- webhook_events --------------------------------------------------------------
CREATE TABLE webhook_events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

    -- Event
    event_id VARCHAR(255) UNIQUE NOT NULL,
    event_type VARCHAR(100) NOT NULL,

    -- Payload
    payload JSONB NOT NULL,

    -- Processing
    processed BOOLEAN DEFAULT FALSE,
    processed_at TIMESTAMP,
    error_message TEXT,

    -- Timestamps
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW()  -- addition
);

CREATE INDEX idx_webhook_events_event_type ON webhook_events(event_type);
CREATE INDEX idx_webhook_events_processed ON webhook_events(processed);
CREATE INDEX idx_webhook_events_created_at ON webhook_events(created_at);

CREATE TRIGGER webhook_events_set_updated_at BEFORE UPDATE ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION billing_set_updated_at();

-- usage_reservations (addition) -------------------------------------------------
-- One row per job that asked for quota. state:
--   reserved  counted in images_processed, job in flight
--   processed the job completed; counted for good
--   released  the job failed or was cancelled; its count was given back
--   blocked   the job was refused (quota); nothing counted
CREATE TABLE usage_reservations (
    job_id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    usage_id UUID NOT NULL REFERENCES usage_tracking(id) ON DELETE CASCADE,
    state TEXT NOT NULL DEFAULT 'reserved'
        CHECK (state IN ('reserved', 'processed', 'released', 'blocked')),
    is_overage BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP NOT NULL DEFAULT NOW()
);
CREATE INDEX idx_usage_reservations_user ON usage_reservations(user_id);
CREATE INDEX idx_usage_reservations_usage ON usage_reservations(usage_id);
CREATE INDEX idx_usage_reservations_reserved ON usage_reservations(updated_at)
    WHERE state = 'reserved';

CREATE TRIGGER usage_reservations_set_updated_at BEFORE UPDATE ON usage_reservations
    FOR EACH ROW EXECUTE FUNCTION billing_set_updated_at();

-- meter_outbox (addition): one Stripe meter event per overage image -------------
CREATE TABLE meter_outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id UUID NOT NULL UNIQUE,            -- also the Stripe idempotency identifier
    user_id UUID REFERENCES users(id) ON DELETE SET NULL,
    stripe_customer_id VARCHAR(255),
    event_name VARCHAR(100) NOT NULL DEFAULT 'image_overage',
    value INT NOT NULL DEFAULT 1 CHECK (value > 0),
    status VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed')),
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL DEFAULT NOW(),
    last_error TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    sent_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT NOW()
);
CREATE INDEX idx_meter_outbox_due ON meter_outbox(next_attempt_at) WHERE status = 'pending';

CREATE TRIGGER meter_outbox_set_updated_at BEFORE UPDATE ON meter_outbox
    FOR EACH ROW EXECUTE FUNCTION billing_set_updated_at();

-- Readers: the gateway shows plans, usage and billing; the worker reads plans.
GRANT SELECT ON subscriptions, usage_tracking, webhook_events, usage_reservations, meter_outbox
    TO ca_api_gateway;
GRANT SELECT ON subscriptions TO ca_job_worker;

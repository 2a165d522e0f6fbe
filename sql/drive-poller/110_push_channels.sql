-- drive-poller slice (issue 18, "Seconds, not a poll interval"): Drive push
-- notification channels (changes.watch), one live channel per watched row,
-- registered, renewed and stopped by the poller (services/drive-poller/push.c,
-- docs/drive-poller.md "Push notifications"). Runs as ca_drive_poller; no
-- other role reads these rows.
--
-- drive_push_channels: the channel id is ours (a random UUID, sent back by
-- Google as X-Goog-Channel-ID); resource_id is Google's (needed by
-- channels.stop); the channel's secret token is kept only as its SHA-256
-- (token_sha256: a notification's X-Goog-Channel-Token is hashed and compared
-- in constant time). address is the DRIVE_WEBHOOK_URL the channel was made
-- for (a changed URL makes the poller replace it). stop_after: the row is to
-- be stopped at Google (its watch stopped, the folder changed, the user left,
-- or a newer channel replaced it); stop_claimed_until: a replica is stopping
-- it. A row whose drive_polls row is deleted (the user's account) goes with
-- it: the channel then ends at its expiration and its notifications are
-- refused (no token is left to stop it with).
--
-- drive_polls.push_requested_at: the time of the last accepted notification.
-- A notification makes the row due now (next_poll_at); when one arrives while
-- the row is being polled, the poll's record sees push_requested_at later than
-- its claim and keeps the row due at once instead of an interval later (the
-- change may be after the poll's changes.list).

CREATE TABLE drive_push_channels (
    id UUID PRIMARY KEY,
    poll_id UUID NOT NULL REFERENCES drive_polls(id) ON DELETE CASCADE,
    user_id UUID NOT NULL,
    resource_id TEXT,                 -- NULL while changes.watch is in flight
    token_sha256 BYTEA NOT NULL,
    address TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT timezone('UTC', now()),
    stop_after TIMESTAMP,
    stop_claimed_until TIMESTAMP,
    stop_attempts INT NOT NULL DEFAULT 0,
    notifications BIGINT NOT NULL DEFAULT 0,
    last_notification_at TIMESTAMP,
    CONSTRAINT drive_push_channels_token_len CHECK (octet_length(token_sha256) = 32)
);

CREATE INDEX idx_drive_push_channels_poll ON drive_push_channels(poll_id);
CREATE INDEX idx_drive_push_channels_stop ON drive_push_channels(stop_after)
    WHERE stop_after IS NOT NULL;

ALTER TABLE drive_polls ADD COLUMN push_requested_at TIMESTAMP;

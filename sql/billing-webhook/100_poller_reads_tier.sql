-- billing-webhook slice: the drive-poller reads a user's tier (issue 15, fair
-- scheduling). It pushes each new job id to its user's list of the fair queue
-- with the user's subscription tier (docs/common/queue.md). The row policy
-- subscriptions_services (050_rls.sql) already lets ca_drive_poller see every
-- row; the grant is limited to the columns the poller needs (no Stripe ids).
GRANT SELECT (user_id, tier, created_at) ON subscriptions TO ca_drive_poller;

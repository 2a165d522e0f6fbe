-- drive-poller slice: row-level security for the gateway's connection.
-- ca_api_gateway sees only the rows of the transaction's user (app.user_id, set
-- by the gateway's pool) — or every row inside a SECURITY DEFINER function that
-- sets app.rls_system = 'on'. The owner (ca_drive_poller) bypasses RLS (not
-- forced); drive_polls_start_watch/stop_watch run as the owner.

ALTER TABLE drive_polls ENABLE ROW LEVEL SECURITY;
CREATE POLICY drive_polls_gateway ON drive_polls FOR SELECT TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on');

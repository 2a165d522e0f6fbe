-- Notices say "1 photo waits" and "3 photos wait" instead of "photo(s)":
-- notice_text again, with the same signature, kinds and data members as 100;
-- only the quota_waiting and jobs_failed texts change. Notices already
-- stored keep their text.

CREATE OR REPLACE FUNCTION notice_text(p_kind text, p_data jsonb, OUT title text, OUT message text)
LANGUAGE plpgsql IMMUTABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    used text := COALESCE(p_data ->> 'images_used', '?');
    lim text := COALESCE(p_data ->> 'monthly_limit', '?');
    tier text := COALESCE(p_data ->> 'tier', 'current');
    n text := COALESCE(p_data ->> 'count', p_data ->> 'waiting', '1');
    one boolean := COALESCE(p_data ->> 'count', p_data ->> 'waiting', '1') = '1';
    photos text := CASE WHEN one THEN 'photo' ELSE 'photos' END;
BEGIN
    CASE p_kind
    WHEN 'usage_80' THEN
        title := 'You have used 80% of your monthly images';
        message := format('You have processed %s of the %s images your %s plan includes this period.',
                          used, lim, tier);
    WHEN 'usage_100' THEN
        title := 'You have reached your monthly image limit';
        message := format('You have processed %s of the %s images your %s plan includes this period. ',
                          used, lim, tier)
                   || CASE WHEN tier = 'creator'
                           THEN 'Further photos are processed and billed at $0.50 each.'
                           ELSE 'New photos are not processed until the next period starts or you upgrade your plan.'
                      END;
    WHEN 'quota_waiting' THEN
        title := 'Photos are waiting for your monthly limit';
        message := format('%s %s %s because your plan''s monthly limit is reached. '
                          '%s processed by %s, in order, when the next period starts '
                          'or when you upgrade your plan.', n, photos,
                          CASE WHEN one THEN 'waits' ELSE 'wait' END,
                          CASE WHEN one THEN 'It is' ELSE 'They are' END,
                          CASE WHEN one THEN 'itself' ELSE 'themselves' END);
    WHEN 'drive_revoked' THEN
        title := 'Reconnect Google Drive';
        message := 'Creator Automation can no longer reach your Google Drive (the access was '
                   'revoked or has expired), so your folder is no longer watched. Sign in again '
                   'with Google to reconnect, then check your watched folder in the dashboard.';
    WHEN 'folder_gone' THEN
        title := 'Your watched folder is gone';
        message := 'The folder you asked us to watch was deleted, moved to the trash or is no '
                   'longer shared with Creator Automation, so it is no longer watched. Pick a '
                   'folder again in the dashboard.';
    WHEN 'payment_failed' THEN
        title := 'Your payment failed';
        message := format('We could not collect the payment for your %s plan. Please update your '
                          'payment method in the billing portal (Billing in the dashboard).', tier);
    WHEN 'jobs_failed' THEN
        title := format('%s %s could not be processed', n, photos);
        message := format('%s %s failed for good. The job list shows why; you can retry %s '
                          'there.', n, photos, CASE WHEN one THEN 'it' ELSE 'them' END);
    ELSE
        title := p_kind;
        message := '';
    END CASE;
END
$$;

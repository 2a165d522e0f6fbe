-- drive-poller slice (issue 15, "Notices"): when polling stops because Google
-- access was revoked (or no tokens are held), or because the watched folder is
-- gone, the user gets a notice telling how to reconnect (sign in again, or
-- pick a folder again): sql/job-worker/100_notices.sql's notice_raise.
--
-- The poller stops a watch in services/drive-poller/poll.c (record_stop):
-- stopped_reason 'drive_revoked' or 'drive_disconnected' → drive_revoked,
-- FOLDER_GONE_REASON ('folder not found or no longer shared') → folder_gone.
-- The stop is one transition active → inactive of one row; the key
-- 'watch:<id>:<stop time>' makes each stop one notice (a watch started again
-- and stopped again later is a new cause). A stop by the user
-- (drive_polls_stop_watch: user_stopped, replaced, account_deleted) raises
-- nothing.

CREATE FUNCTION drive_polls_stop_notice() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    kind text;
BEGIN
    IF NEW.user_id IS NULL THEN
        RETURN NULL;
    END IF;
    kind := CASE WHEN NEW.stopped_reason IN ('drive_revoked', 'drive_disconnected') THEN 'drive_revoked'
                 WHEN NEW.stopped_reason = 'folder not found or no longer shared' THEN 'folder_gone'
            END;
    IF kind IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM notice_raise(NEW.user_id, kind,
                         'watch:' || NEW.id || ':'
                         || to_char(NEW.last_poll_at, 'YYYY-MM-DD"T"HH24:MI:SS.US'),
                         jsonb_build_object('folder_id', NEW.folder_id,
                                            'reason', NEW.stopped_reason,
                                            'action', CASE kind WHEN 'drive_revoked' THEN 'sign_in'
                                                                ELSE 'pick_folder' END));
    RETURN NULL;
END
$$;

CREATE TRIGGER drive_polls_stop_notice AFTER UPDATE OF active ON drive_polls
    FOR EACH ROW WHEN (OLD.active AND NOT NEW.active)
    EXECUTE FUNCTION drive_polls_stop_notice();

REVOKE ALL ON FUNCTION drive_polls_stop_notice() FROM PUBLIC;

-- The avatar each wallet user last got from ENS: where it came from (the avatar's URL, or a
-- hash of inline data) and the mxc:// URI it was imported as. An avatar that still equals
-- that URI was never changed by the user, so the next refresh may replace it.
ALTER TABLE ens_profiles ADD COLUMN avatar_source TEXT;
ALTER TABLE ens_profiles ADD COLUMN avatar_url TEXT;

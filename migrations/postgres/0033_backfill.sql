-- Events kept only as state or auth of a room joined through another server (the answer of
-- `send_join`, auth events fetched for history): not part of the timeline until backfill
-- reaches them. Backfilled history sits at negative stream positions, below the join.
ALTER TABLE events ADD COLUMN outlier BIGINT NOT NULL DEFAULT 0;

-- The yearly assessment counts the year's exits (退出, registry exit cases that
-- reached 销号 in the year): households of a village and the village itself; a
-- unit, those of the villages it helps. They break ties in the ranking.
ALTER TABLE assessment_result
  ADD COLUMN households_exited int NOT NULL DEFAULT 0,
  ADD COLUMN villages_exited   int NOT NULL DEFAULT 0;

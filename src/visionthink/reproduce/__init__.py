"""The miniature reproduction: stages (entry-point runs) and the report written from their outputs."""

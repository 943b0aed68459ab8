"""Lineage in a lamindb instance (`register`): the run's aggregates and SOMA store as
artifacts, the per-sample matrices as a collection, the run as a transform and run with the
config, kbagg's version and the FASTQs' SHA-256 (from the provenance record, not hashed
again). Optional: config `lamindb.enabled`, rule `lineage`, env `envs/lamindb.yaml`."""

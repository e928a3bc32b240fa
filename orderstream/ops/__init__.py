"""Operations on a running pipeline: reprocessing, data-quality reports, retention.

Plain functions that take `Settings` (and an engine or session) so they are testable
without Prefect; the flows in `flows/reprocess.py`, `flows/quality.py` and
`flows/retention.py` are thin wrappers around them.

* `replay`: re-apply dead-lettered events from a role's DLQ after the cause is fixed.
* `revalidate`: correct quarantined rows and release those that now pass validation.
* `offsets`: reset a consumer group to a timestamp so it re-reads its topic.
* `quality`: the data-quality report (quarantine over time, expectations, worst sources).
* `retention`: delete source rows and ledger entries that are fully handled and old.
"""

"""The read path: TensorStore over local and ``s3://`` stores (:mod:`.tensorstore`) and the
bounded local disk cache of remote shards (:mod:`.disk_cache`)."""

"""One chain on one machine: state, durable store, submit and submit_batch, queries, proofs."""

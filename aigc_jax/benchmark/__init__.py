"""The throughput benchmark (`python -m aigc_jax.benchmark`): measuring a train step (`measure`), the report
over results (`report`), and the pod-scale plan read off the compiled program (`plan`). The command line is
`__main__.py`. None of it imports TensorFlow, TFDS, CLU or Orbax unless a run reads a real dataset."""

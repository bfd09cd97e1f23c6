"""The real training loop on real offline digits: outputs, exact resume, and a single compilation."""
import glob
import os

import jax
import numpy as np
import pytest
from PIL import Image

from aigc_jax import checkpointing, train


def _params(state):
  return jax.device_get((state.generator, state.discriminator))


def test_short_run_writes_checkpoints_events_and_samples(tiny_config, tmp_path):
  workdir = str(tmp_path / 'run')
  state = train.train_and_evaluate(tiny_config, workdir)
  assert int(state.step) == 4
  checkpoints = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=3)
  assert checkpoints.all_steps() == [2, 4]
  assert checkpoints.restore_config(4)['model']['name'] == 'mlp'
  assert glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  pngs = sorted(glob.glob(os.path.join(workdir, 'samples', '*.png')))
  assert [os.path.basename(p) for p in pngs] == ['step_0000002.png', 'step_0000004.png']
  grid = np.asarray(Image.open(pngs[-1]))
  assert grid.ndim == 2 and grid.shape[0] == grid.shape[1] > 56 and grid.std() > 0
  assert os.path.exists(os.path.join(workdir, 'config.json'))


@pytest.mark.parametrize('model', ['mlp', 'dcgan'])
def test_stop_and_resume_equals_an_uninterrupted_run(tiny_config, tmp_path, model):
  tiny_config.model.name = model
  tiny_config.num_train_steps = 6
  tiny_config.checkpoint_every_steps = 3
  tiny_config.sample_every_steps = 100
  straight = train.train_and_evaluate(tiny_config, str(tmp_path / 'straight'))

  tiny_config.num_train_steps = 3  # "preempted" after 3 steps, then restarted with the full run
  first_half = train.train_and_evaluate(tiny_config, str(tmp_path / 'resumed'))
  assert int(first_half.step) == 3
  tiny_config.num_train_steps = 6
  resumed = train.train_and_evaluate(tiny_config, str(tmp_path / 'resumed'))
  assert int(resumed.step) == 6
  # Same devices, same data order (the iterator is checkpointed), same per-step keys: bit for bit.
  jax.tree.map(np.testing.assert_array_equal, _params(resumed), _params(straight))


def test_the_loop_compiles_nothing_after_the_first_step(tiny_config, tmp_path):
  tiny_config.sample_every_steps = 1_000   # samples, checkpoints and logs only at the last step
  tiny_config.checkpoint_every_steps = 1_000
  tiny_config.log_every_steps = 1_000
  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, duration, **kw: compiles.append(event) if event.endswith('backend_compile_duration') else None)
  counts = []
  for steps in (2, 7):
    jax.clear_caches()
    tiny_config.num_train_steps = steps
    compiles.clear()
    train.train_and_evaluate(tiny_config, str(tmp_path / f'run{steps}'))
    counts.append(len(compiles))
  assert counts[0] > 0
  assert counts[1] == counts[0], f'{counts[1] - counts[0]} extra compilations in 5 more steps'

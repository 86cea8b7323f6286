"""The models: the contract (base), the kinds (kinds), the networks and their loss (vae, recvae_net), the neural
recommender (neural), the baselines and the ensemble. Import-free, so that reading `recvae.models.kinds` stays light."""

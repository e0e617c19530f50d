"""SuperSimpleNet for autovi: a feature adaptor, feature-space Perlin/Gaussian anomalies, segmentation and classification heads."""

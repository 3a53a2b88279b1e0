"""Statistical studies on real data: the seed protocol, the gate against retraining noise, the champion sequence and data that grows."""

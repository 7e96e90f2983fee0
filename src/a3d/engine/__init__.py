"""Where models meet data: training, evaluation over a split, the demo, the grid and prediction on scans."""

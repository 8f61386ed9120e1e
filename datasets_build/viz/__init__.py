"""Pictures of builds: skeleton animations and filmstrips, histograms."""

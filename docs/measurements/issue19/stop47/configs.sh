# Issue 19 part 3, stop 47: the configurations, sourced by the run_*.sh scripts.
# szc: stop 46's small-clean-set rule (sz) with the step rule as a cap, so a step already under it is left alone.
SZC="outer_lr_size=5000,outer_lr_size_cap=2e-3,clean_distill=1,clean_distill_size=100"
# B2: stop 44's candidate b2r2n100s3f (ℓ2 bound 100, a second restart, a bounded δ of 10, a smooth δ in round 1)
B2="norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2,smooth_search=3,smooth_rounds=first"
# ss: the small-clean-set rule with the anchor faded out at 5,000 images (clean_distill_until), so that from 5,000
# clean images on the run is exactly the default's: step min(2e-3, 2e-3·√(n/5000)), β = (5000/n − 1)/49.
SS="outer_lr_size=5000,outer_lr_size_cap=2e-3,clean_distill=1,clean_distill_size=100,clean_distill_until=5000"

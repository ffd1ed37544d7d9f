set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_sweep_load_row6.png.tmp.24999'
$m << EOD
0.197205 0.102051 0.136047 0.0731201 0.0731201 0.100403 0.189148 0.128906
0.0715332 0.0964355 0.16864 0.184509 0.0194702 0.0876465 0.0628052 0.30896
EOD
set title "Attention-Aware, relative σ=1: load (last epoch, first\nseed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle

set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_sweep_load_row5.png.tmp.24999'
$m << EOD
0.0812378 0.116516 0.103271 0.201782 0.0984497 0.0778198 0.211182 0.109741
0.120544 0.108337 0.0673218 0.0279541 0.12262 0.246948 0.0817871 0.224487
EOD
set title "Attention-Aware, relative σ=0.3: load (last epoch, first\nseed)"
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

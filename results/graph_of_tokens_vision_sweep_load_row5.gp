set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_sweep_load_row5.png.tmp.27114'
$m << EOD
0.0941636 0.118543 0.0994715 0.15193 0.0936581 0.119899 0.179067 0.143267
0.173529 0.135524 0.103332 0.142187 0.0348805 0.170979 0.120519 0.119049
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

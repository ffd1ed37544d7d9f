set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_sweep_load_row2.png.tmp.27114'
$m << EOD
0.111259 0.148346 0.104802 0.1446 0.104458 0.126103 0.138212 0.12222
0.122036 0.0690947 0.130538 0.13426 0.169692 0.145267 0.0986443 0.130469
EOD
set title "Similarity-Aware, cosine τ=0.1: load (last epoch, first\nseed)"
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

set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_sweep_load_row4.png.tmp.27114'
$m << EOD
0.0491498 0.0992647 0.0772518 0.0516774 0.223369 0.124885 0.177941 0.196461
0.121094 0.103814 0.135317 0.107973 0.130124 0.136466 0.108961 0.15625
EOD
set title "Similarity-Aware, cosine τ=1: load (last epoch, first seed)"
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

set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_load_row1.png.tmp.25775'
$m << EOD
0.0970129 0.126333 0.119508 0.138948 0.102413 0.149563 0.18102 0.0852022
0.140441 0.120198 0.129986 0.133203 0.116912 0.153906 0.102045 0.103309
EOD
set title "Similarity-Aware V-MoE (ours: cosine τ=0.03): load (last\nepoch, first seed)"
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
